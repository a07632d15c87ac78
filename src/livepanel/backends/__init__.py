"""Where events live between ``publish`` and the clients: memory, Redis Streams or PostgreSQL.

The contract a backend implements, and the capabilities it may declare, are in
:mod:`livepanel.backends.base`; ``livepanel.backends.redis`` (the ``redis``
extra) is the Redis Streams backend, ``livepanel.backends.postgres`` (the
``postgres`` extra) the PostgreSQL one.
"""

from __future__ import annotations

import importlib

from livepanel.backends.base import (
    Backend,
    Capability,
    Control,
    Deliver,
    ReaderReport,
    ReaderStatus,
    SharedReceipts,
    SingleUseClaims,
    TransactionalPublish,
    WorkerPresence,
    reader_status_of,
    shared_receipts_of,
    single_use_claims_of,
    transactional_publish_of,
    worker_presence_of,
)
from livepanel.backends.memory import MemoryBackend
from livepanel.errors import ConfigurationError
from livepanel.events.redaction import redact_url
from livepanel.state import DEFAULT_STATE_LIMIT

__all__ = [
    "Backend",
    "Capability",
    "Control",
    "Deliver",
    "MemoryBackend",
    "ReaderReport",
    "ReaderStatus",
    "SharedReceipts",
    "SingleUseClaims",
    "TransactionalPublish",
    "WorkerPresence",
    "backend_from_url",
    "reader_status_of",
    "shared_receipts_of",
    "single_use_claims_of",
    "transactional_publish_of",
    "worker_presence_of",
]


def backend_from_url(
    url: str, *, history: int = 1000, state_limit: int = DEFAULT_STATE_LIMIT
) -> Backend:
    """Build a backend from a URL: ``memory://``, ``redis://host:6379/0``, ``rediss://...``,
    ``redis+sentinel://host:26379/mymaster/0``, ``redis+cluster://host:7000`` or
    ``postgresql://user@host:5432/db`` (also ``postgres://``).

    Raises:
        ConfigurationError: an unknown scheme, or the ``redis`` or ``postgres`` extra is
            missing.

    Example::

        >>> backend_from_url("memory://", history=50)  # doctest: +ELLIPSIS
        <livepanel.backends.memory.MemoryBackend object at ...>
    """
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower() if separator else ""
    if scheme == "memory":
        return MemoryBackend(history=history, state_limit=state_limit)
    if scheme in ("redis", "rediss", "unix") or scheme.partition("+")[2] in ("sentinel", "cluster"):
        try:
            module = importlib.import_module("livepanel.backends.redis")
        except ImportError as exc:  # the redis extra is not installed
            raise ConfigurationError(
                f"the Redis backend needs redis-py: pip install 'livepanel[redis]' ({exc})"
            ) from None
        backend: Backend = module.RedisBackend.from_url(
            url, history=history, state_limit=state_limit
        )
        return backend
    if scheme in ("postgresql", "postgres"):
        try:
            postgres = importlib.import_module("livepanel.backends.postgres")
        except ImportError as exc:  # the postgres extra is not installed
            raise ConfigurationError(
                f"the PostgreSQL backend needs psycopg 3: pip install 'livepanel[postgres]' ({exc})"
            ) from None
        found: Backend = postgres.PostgresBackend.from_url(
            url, history=history, state_limit=state_limit
        )
        return found
    shown = redact_url(url)  # never show credentials
    raise ConfigurationError(
        f"unknown backend URL {shown!r}; expected memory://, redis://host:port/db, "
        "redis+sentinel://host:26379/<service>, redis+cluster://host:port or "
        "postgresql://user@host:port/db"
    )
