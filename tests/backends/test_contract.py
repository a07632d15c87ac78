"""The backend contract of ``livepanel.backends.base``, checked on every backend we have.

Each test runs on the memory backend, the Redis backend (a private server), the
PostgreSQL backend (a schema of its own on the shared server), a
backend written against ``base.py`` alone (``ContractOnlyBackend``) and the
complete example in ``Backend``'s docstring. The capability tests run on the
backends that declare the capability.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from livepanel import Broadcaster, Event, MemoryBackend
from livepanel.backends.base import (
    Backend,
    Capability,
    reader_status_of,
    single_use_claims_of,
    transactional_publish_of,
    worker_presence_of,
)
from livepanel.protocol import make_id, parse_id
from tests.backends.contract_backend import ContractOnlyBackend
from tests.backends.docstring_example import docstring_example
from tests.redis.redis_helpers import Tick, numbers, run, started, take, wait_until

MakeBackend = Callable[[], Backend]
REDIS = pytest.param("redis", marks=pytest.mark.redis)
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
KINDS = ["memory", REDIS, POSTGRES, "contract-only", "docstring-example"]
CLAIMING = ["memory", REDIS, POSTGRES]  # the kinds that declare SINGLE_USE_CLAIMS
READING = ["memory", REDIS, POSTGRES]  # READER_STATUS
COUNTING = [REDIS, POSTGRES]  # WORKER_PRESENCE
TRANSACTING = [POSTGRES]  # TRANSACTIONAL_PUBLISH


def factory(request: pytest.FixtureRequest) -> MakeBackend:
    """A factory of fresh backends of the requested kind (one Redis server per test)."""
    kind: str = request.param
    if kind == "redis":
        from livepanel.backends.redis import RedisBackend

        url: str = request.getfixturevalue("redis_url")
        return lambda: RedisBackend(url, reconnect_delay=0.05, reconnect_max_delay=0.2)
    if kind == "postgres":
        from livepanel.backends.postgres import PostgresBackend

        dsn: str = request.getfixturevalue("postgres_url")
        return lambda: PostgresBackend.from_url(dsn, reconnect_delay=0.05, poll_interval=0.5)
    if kind == "memory":
        return MemoryBackend
    if kind == "contract-only":
        return ContractOnlyBackend
    backend_class: MakeBackend = docstring_example()["ListBackend"]
    return backend_class


@pytest.fixture(params=KINDS)
def make_backend(request: pytest.FixtureRequest) -> MakeBackend:
    """Every kind of backend."""
    return factory(request)


@pytest.fixture(params=CLAIMING)
def claiming(request: pytest.FixtureRequest) -> MakeBackend:
    """The kinds that declare single-use claims."""
    return factory(request)


@pytest.fixture(params=READING)
def reading(request: pytest.FixtureRequest) -> MakeBackend:
    """The kinds that declare a reader status."""
    return factory(request)


@pytest.fixture(params=COUNTING)
def counting(request: pytest.FixtureRequest) -> MakeBackend:
    """The kinds that declare worker presence."""
    return factory(request)


class Harness:
    """Starts a backend with callbacks that record what it delivers."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.delivered: list[Event] = []
        self.controls: list[dict[str, Any]] = []
        self.threads: set[int] = set()
        self._lock = threading.Lock()
        self._inside = False
        self.overlapped = False  # deliver was called while a call was running

    def deliver(self, events: Any) -> None:
        with self._lock:
            self.overlapped |= self._inside
            self._inside = True
        self.delivered.extend(events)
        with self._lock:
            self._inside = False

    def control(self, message: dict[str, Any]) -> None:
        self.controls.append(message)

    async def start(self) -> str:
        return await self.backend.start(self.deliver, self.control)

    async def delivered_count(self, count: int) -> list[Event]:
        await wait_until(lambda: len(self.delivered) >= count, what=f"{count} deliveries")
        return self.delivered


def ticks(start: int, stop: int) -> list[Event]:
    return [Event("test.tick", {"n": n}) for n in range(start, stop)]


def test_start_returns_the_head_and_nothing_follows_it(make_backend: MakeBackend) -> None:
    """The id start() returns is valid as since: its replay is empty."""

    async def scenario() -> None:
        harness = Harness(make_backend())
        head = await harness.start()
        try:
            assert await harness.backend.replay(head) == []
        finally:
            await harness.backend.stop()

    run(scenario())


def test_publish_stores_and_returns_the_event_with_an_id_of_the_heads_epoch(
    make_backend: MakeBackend,
) -> None:
    """publish() gives each event its own id in the stream's epoch."""

    async def scenario() -> None:
        harness = Harness(make_backend())
        head = await harness.start()
        try:
            stored = [await harness.backend.publish(event) for event in ticks(0, 5)]
            ids = [event.id for event in stored]
            assert None not in ids
            assert len(set(ids)) == 5
            assert {parse_id(i or "")[0] for i in ids} == {parse_id(head)[0]}
            assert [event.payload["n"] for event in stored] == list(range(5))
        finally:
            await harness.backend.stop()

    run(scenario())


def test_every_new_event_is_delivered_once_in_stream_order(make_backend: MakeBackend) -> None:
    """Events handed over from the loop and from two threads: each delivered once, one call
    at a time, in the order replay() gives the stream."""

    async def scenario() -> None:
        harness = Harness(make_backend())
        head = await harness.start()
        backend = harness.backend
        try:

            def hand_over(first: int) -> None:
                for event in ticks(first, first + 20):
                    backend.publish_nowait(event)

            threads = [threading.Thread(target=hand_over, args=(first,)) for first in (0, 100)]
            for thread in threads:
                thread.start()
            stored = [await backend.publish(event) for event in ticks(200, 210)]
            for thread in threads:
                await asyncio.to_thread(thread.join)
            delivered = await harness.delivered_count(50)
            await asyncio.sleep(0.1)  # nothing more comes
            assert len(harness.delivered) == 50
            replayed = await backend.replay(head)
            assert replayed is not None
            assert [e.id for e in delivered] == [e.id for e in replayed]
            assert sorted(numbers(delivered)) == [*range(20), *range(100, 120), *range(200, 210)]
            assert [e.id for e in delivered if e.payload["n"] >= 200] == [e.id for e in stored]
            assert not harness.overlapped
        finally:
            await backend.stop()

    run(scenario())


def test_replay_returns_every_event_after_since_in_order(make_backend: MakeBackend) -> None:
    """replay(id) is what followed the event named; the newest id replays nothing."""

    async def scenario() -> None:
        harness = Harness(make_backend())
        await harness.start()
        try:
            stored = [await harness.backend.publish(event) for event in ticks(0, 10)]
            after_third = await harness.backend.replay(stored[3].id or "")
            assert after_third is not None
            assert numbers(after_third) == list(range(4, 10))
            assert [e.id for e in after_third] == [e.id for e in stored[4:]]
            assert await harness.backend.replay(stored[-1].id or "") == []
        finally:
            await harness.backend.stop()

    run(scenario())


def test_an_id_from_another_epoch_is_not_replayed(make_backend: MakeBackend) -> None:
    """A since from another history answers None (resume_unavailable), never a range."""

    async def scenario() -> None:
        harness = Harness(make_backend())
        await harness.start()
        try:
            stored = await harness.backend.publish(Event("test.tick", {"n": 1}))
            epoch, _, position = (stored.id or "").partition(":")
            assert await harness.backend.replay(make_id("0ther" + epoch, position)) is None
        finally:
            await harness.backend.stop()

    run(scenario())


def test_a_control_message_reaches_the_control_callback(make_backend: MakeBackend) -> None:
    """send_control() comes back to this process's control callback, and is not an event."""

    async def scenario() -> None:
        harness = Harness(make_backend())
        await harness.start()
        try:
            await harness.backend.send_control({"op": "disconnect", "user": "alice"})
            await wait_until(lambda: bool(harness.controls), what="the control message")
            assert harness.controls == [{"op": "disconnect", "user": "alice"}]
            assert harness.delivered == []
        finally:
            await harness.backend.stop()

    run(scenario())


def test_a_broadcaster_on_the_backend_delivers_and_resumes_without_a_gap(
    make_backend: MakeBackend,
) -> None:
    """Through Broadcaster: live events in order, and a since replays what followed it."""

    async def scenario() -> None:
        async with started(Broadcaster(make_backend())) as broadcaster:
            async with broadcaster.subscribe(["test.*"]) as live:
                first = await broadcaster.apublish(Tick(n=0))
                for n in (1, 2):
                    await broadcaster.apublish(Tick(n=n))
                assert numbers(await take(live, 3)) == [0, 1, 2]
            async with broadcaster.subscribe(["test.*"], since=first.id) as resumed:
                assert resumed.resumed
                broadcaster.publish(Tick(n=3))
                assert numbers(await take(resumed, 3)) == [1, 2, 3]

    run(scenario())


# ---------------------------------------------------------------------- capabilities


def test_declared_capabilities_are_implemented(
    make_backend: MakeBackend, request: pytest.FixtureRequest
) -> None:
    """What a backend declares, the accessor hands back; what it does not, it answers None;
    and the capability tests below run on exactly the kinds that declare each."""
    backend = make_backend()
    kind = request.node.callspec.params["make_backend"]
    accessors = {
        Capability.SINGLE_USE_CLAIMS: (single_use_claims_of, CLAIMING),
        Capability.WORKER_PRESENCE: (worker_presence_of, COUNTING),
        Capability.READER_STATUS: (reader_status_of, READING),
        Capability.TRANSACTIONAL_PUBLISH: (transactional_publish_of, TRANSACTING),
    }
    for capability, (accessor, kinds) in accessors.items():
        declared = capability in backend.capabilities
        assert (accessor(backend) is backend) == declared, capability
        tested = {getattr(k, "values", (k,))[0] for k in kinds}
        assert (kind in tested) == declared, capability


def test_a_claim_holds_once_until_it_expires(claiming: MakeBackend) -> None:
    """claim_once: True the first time, False while it holds, True again once it expired."""
    backend = claiming()
    claims = single_use_claims_of(backend)
    assert claims is not None

    async def scenario() -> None:
        async with started(Broadcaster(backend)) as broadcaster:
            first = await broadcaster.call_backend(lambda: claims.claim_once("t:1", 0.3))
            again = await broadcaster.call_backend(lambda: claims.claim_once("t:1", 0.3))
            other = await broadcaster.call_backend(lambda: claims.claim_once("t:2", 0.3))
            await asyncio.sleep(0.5)
            later = await broadcaster.call_backend(lambda: claims.claim_once("t:1", 0.3))
            assert (first, again, other, later) == (True, False, True, True)

    run(scenario())


def test_a_started_reader_reports_itself_up_to_date(reading: MakeBackend) -> None:
    """reader_status of a started backend with nothing unread: reachable, running, lag 0."""
    backend = reading()
    reader = reader_status_of(backend)
    assert reader is not None

    async def scenario() -> None:
        async with started(Broadcaster(backend)) as broadcaster, broadcaster.subscribe() as live:
            await broadcaster.apublish(Tick(n=1))
            await take(live, 1)
            status = await reader.reader_status(timeout=2.0)
            assert status["reachable"]
            assert status["running"]
            assert (status["waiting"], status["lagSeconds"]) == (False, 0.0)
            assert isinstance(status["idleSeconds"], float)

    run(scenario())


def test_worker_presence_sums_workers_and_forgets_the_expired(counting: MakeBackend) -> None:
    """Two workers' counts add up; an empty write removes one; an expired one drops out."""
    backend = counting()
    presence = worker_presence_of(backend)
    assert presence is not None

    async def scenario() -> None:
        async with started(Broadcaster(backend)):
            await presence.write_presence("w1", {"alice": 2, "": 1}, expiry=5.0)
            await presence.write_presence("w2", {"alice": 1, "bob": 1}, expiry=0.3)
            assert await presence.read_presence() == {"alice": 3, "bob": 1, "": 1}
            await presence.write_presence("w1", {}, expiry=5.0)
            await asyncio.sleep(0.5)
            assert await presence.read_presence() == {}
            assert await presence.claim_announcement("w1", 0.3)
            assert not await presence.claim_announcement("w2", 0.3)

    run(scenario())
