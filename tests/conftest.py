from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import livepanel.events.builtin  # noqa: F401 - the suite publishes the built-in types by name
from livepanel import set_broadcaster
from tests.certs import self_signed
from tests.redis.redis_helpers import RedisServer
from tests.requirements import unavailable

pytest_plugins = ["livepanel.testing"]  # the livepanel_events fixture, as docs/testing.md says

WATCHED_LOGGERS = ("livepanel", "uvicorn", "uvicorn.error", "hypercorn.error", "asyncio")


class LogCapture(logging.Handler):
    """Collects records of the server and livepanel loggers, from every thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        """Every ERROR record or traceback, formatted for an assertion message."""
        return [
            f"{r.name}: {r.getMessage()}"
            for r in self.records
            if r.levelno >= logging.ERROR or r.exc_info
        ]

    def text(self) -> str:
        return "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in self.records)


@pytest.fixture
def server_logs() -> Iterator[LogCapture]:
    """Capture livepanel's and the servers' logs; tests assert they hold no ERROR."""
    handler = LogCapture()
    loggers = [logging.getLogger(name) for name in WATCHED_LOGGERS]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        for lg, level, propagate in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and localhost: (certfile, keyfile)."""
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    return str(cert), str(key)


@pytest.fixture(autouse=True)
def _fresh_default_broadcaster() -> Iterator[None]:
    """Every test starts without a default broadcaster, so none leaks between tests."""
    set_broadcaster(None)
    yield
    set_broadcaster(None)


# ---------------------------------------------------------------------- private Redis servers
# Each test gets its own redis-server on a free port in a temporary directory, never the
# shared one on 6379. Without the binary the tests skip, unless LIVEPANEL_REQUIRE_REDIS=1
# (CI), where they fail.

REDIS_SERVER = shutil.which("redis-server")


def redis_binary(name: str, package: str) -> str:
    """The path of a Redis program; skips the test without it, or fails under
    LIVEPANEL_REQUIRE_REDIS=1."""
    binary = shutil.which(name)
    if binary is None:
        unavailable("redis", f"{name} is not on PATH (apt-get install {package}, or make services)")
    return binary


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """A factory of private servers: ``start_redis(appendonly=True)``,
    ``start_redis(args=["--replicaof", ...])``, ``start_redis(sentinel=True, args=[config
    lines])``; all killed at the end."""
    binary = REDIS_SERVER or redis_binary("redis-server", "redis-server")
    servers: list[RedisServer] = []

    def start(
        *, appendonly: bool = False, args: Sequence[str] = (), sentinel: bool = False
    ) -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        program = redis_binary("redis-sentinel", "redis-sentinel") if sentinel else binary
        server = RedisServer(
            program, directory, appendonly=appendonly, args=args, sentinel=sentinel
        )
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def redis_server(start_redis: Callable[..., RedisServer]) -> RedisServer:
    """A private redis-server without persistence (a restart loses everything)."""
    return start_redis()


@pytest.fixture
def persistent_redis(start_redis: Callable[..., RedisServer]) -> RedisServer:
    """A private redis-server with AOF (appendfsync always): a restart keeps every write."""
    return start_redis(appendonly=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a private redis-server."""
    return redis_server.url


# ---------------------------------------------------------------------- PostgreSQL
# The machine's server on 5432 with a schema of each test's own; tests that kill a server
# start a private cluster on a free port. Without PostgreSQL the tests skip, unless
# LIVEPANEL_REQUIRE_POSTGRES=1 (CI), where they fail.


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The shared PostgreSQL with a fresh schema for this test: a URL naming it."""
    from tests.postgres.pg_helpers import private_schema, shared_server, with_query

    url = shared_server()
    with private_schema(url) as schema:
        yield with_query(url, schema=schema)


@pytest.fixture
def start_postgres() -> Iterator[Callable[..., Any]]:
    """A factory of private clusters (``start_postgres()``, ``start_postgres(primary=c)`` for
    a streaming replica); all killed and removed at the end."""
    from tests.postgres.pg_helpers import Cluster, postgres_binary

    postgres_binary("initdb")  # skip (or fail) early without the server programs
    clusters: list[Cluster] = []

    def start(primary: Cluster | None = None) -> Cluster:
        cluster = Cluster(primary=primary)
        clusters.append(cluster)
        cluster.start()
        return cluster

    try:
        yield start
    finally:
        for cluster in clusters:
            cluster.remove()
