"""Private redis-server instances for the Redis backend tests.

Each test gets its own server on a free port in a temporary directory, never
the shared one on 6379. Without a redis-server binary the tests skip, unless
``LIVEPANEL_REQUIRE_REDIS=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.redis.redis_helpers import RedisServer

REDIS_SERVER = shutil.which("redis-server")


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """A factory of private servers: ``start_redis(appendonly=True)``; all killed at the end."""
    binary = REDIS_SERVER
    if binary is None:
        message = "redis-server is not on PATH (apt-get install redis-server, or make services)"
        if os.environ.get("LIVEPANEL_REQUIRE_REDIS") == "1":
            pytest.fail(f"{message}; LIVEPANEL_REQUIRE_REDIS=1 says these tests must run")
        pytest.skip(message)
    servers: list[RedisServer] = []

    def start(*, appendonly: bool = False) -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = RedisServer(binary, directory, appendonly=appendonly)
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
