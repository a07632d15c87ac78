"""base.py itself: its docstring's example runs, and capabilities are declared, not probed."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from livepanel import Broadcaster, ConfigurationError, Event, MemoryBackend
from livepanel.backends.base import (
    Backend,
    Capability,
    reader_status_of,
    single_use_claims_of,
    worker_presence_of,
)
from tests.backends.contract_backend import ContractOnlyBackend
from tests.backends.docstring_example import docstring_example
from tests.redis.redis_helpers import run, started


def test_the_docstring_example_is_a_complete_backend() -> None:
    """Backend's docstring example runs as written: the class instantiates (no abstract
    method left out) and its broadcaster publishes through it."""
    namespace = docstring_example()
    backend_class = namespace["ListBackend"]
    assert issubclass(backend_class, Backend)
    assert not getattr(backend_class, "__abstractmethods__", None)
    broadcaster = namespace["broadcaster"]
    assert isinstance(broadcaster, Broadcaster)
    assert isinstance(broadcaster.backend, backend_class)

    async def scenario() -> str | None:
        async with started(broadcaster):
            return (await broadcaster.apublish("test.tick", {"n": 1})).id

    assert run(scenario()) == f"{broadcaster.backend.epoch}:1"


def test_the_module_docstring_lists_the_duties_it_announces() -> None:
    """'four duties' and four bullets of them, one per abstract duty."""
    import livepanel.backends.base as base

    doc = base.__doc__ or ""
    duties = doc.partition("duties, and nothing else:")[2].partition("\n\n\n")[0]
    assert "four duties" in doc
    assert [line for line in duties.splitlines() if line.startswith("* **")] == [
        "* **store**: :meth:`Backend.publish` / :meth:`Backend.publish_nowait` append",
        "* **replay a range**: :meth:`Backend.replay` returns every retained event",
        "* **deliver in order**: once started, it calls ``deliver`` with every new",
        "* **keep the state** (optional): :meth:`Backend.state` returns the fold of",
    ]


def test_a_backend_without_capabilities_answers_none_to_every_accessor() -> None:
    """A contract-only backend offers nothing more: the features fall back or refuse."""
    backend = ContractOnlyBackend()
    assert backend.capabilities == frozenset()
    assert single_use_claims_of(backend) is None
    assert worker_presence_of(backend) is None
    assert reader_status_of(backend) is None


def test_a_backend_that_declares_a_capability_it_lacks_is_refused_when_defined() -> None:
    """Declaring single-use claims without claim_once fails at class definition, naming
    what is missing: a feature never finds out at the first ticket."""
    with pytest.raises(TypeError, match=r"claim_once.*SINGLE_USE_CLAIMS") as raised:

        class Boasting(ContractOnlyBackend):
            capabilities: ClassVar[frozenset[Capability]] = frozenset(
                {Capability.SINGLE_USE_CLAIMS}
            )
            claims_shared: ClassVar[bool] = True

    assert "SingleUseClaims" in str(raised.value)


def test_a_capability_withdrawn_from_an_instance_is_refused_not_used() -> None:
    """An instance whose declared claim_once is gone (set to None) is a configuration error
    for the feature that asks, never a backend that silently claims nothing."""
    backend = MemoryBackend()
    backend.claim_once = None  # type: ignore[method-assign,assignment]
    with pytest.raises(ConfigurationError, match="does not implement SingleUseClaims"):
        single_use_claims_of(backend)


def test_an_undeclared_capability_is_never_probed() -> None:
    """Methods named like a capability's, without the declaration, are not used."""

    class Shy(ContractOnlyBackend):
        claims_shared: ClassVar[bool] = True

        async def claim_once(self, key: str, ttl: float) -> bool:
            raise AssertionError("probed")

        async def reader_status(self, timeout: float = 2.0) -> Any:
            raise AssertionError("probed")

    backend = Shy()
    assert single_use_claims_of(backend) is None
    assert reader_status_of(backend) is None

    async def scenario() -> dict[str, Any]:
        async with started(Broadcaster(backend)) as broadcaster:
            return await broadcaster.health()

    assert run(scenario())["backend"] == "ok"


def test_the_shipped_backends_declare_what_they_implement() -> None:
    """Memory: claims in one process and a reader that never trails; Redis: all three, with
    claims shared between processes."""
    from livepanel.backends.redis import RedisBackend

    memory = MemoryBackend()
    claims = single_use_claims_of(memory)
    assert claims is not None
    assert not claims.claims_shared
    assert worker_presence_of(memory) is None
    redis_backend = RedisBackend("redis://127.0.0.1:1/0")
    shared = single_use_claims_of(redis_backend)
    assert shared is not None
    assert shared.claims_shared
    assert worker_presence_of(redis_backend) is redis_backend
    assert reader_status_of(redis_backend) is redis_backend
    assert Event  # the events module is what backends store


def test_the_old_connect_module_path_still_imports_with_a_warning() -> None:
    """livepanel.backends.redis_connect moved into the redis package; the old path works and
    says where to go."""
    import importlib
    import sys

    from livepanel.backends.redis import connect

    sys.modules.pop("livepanel.backends.redis_connect", None)
    with pytest.warns(DeprecationWarning, match=r"livepanel\.backends\.redis\.connect"):
        old = importlib.import_module("livepanel.backends.redis_connect")
    assert old.parse_target is connect.parse_target
    assert old.RedisTarget is connect.RedisTarget


def test_a_backend_describes_where_its_stream_lives_without_passwords() -> None:
    """describe(): memory://, the Redis URL with its password hidden, else the class name."""
    from livepanel.backends.redis import RedisBackend

    assert MemoryBackend().describe() == "memory://"
    assert RedisBackend("redis://:s3cret@cache:6379/0").describe() == "redis://:***@cache:6379/0"
    assert ContractOnlyBackend().describe() == "ContractOnlyBackend"
