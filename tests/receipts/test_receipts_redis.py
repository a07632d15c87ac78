"""The Redis backend's shared ack summaries: what another worker (or a stranger) left there."""

from __future__ import annotations

import asyncio

import pytest
import redis

from livepanel import Broadcaster
from livepanel.backends import shared_receipts_of
from livepanel.backends.redis.settings import DEFAULT_STREAM
from tests.redis.redis_helpers import RedisServer, run

pytestmark = pytest.mark.redis


def test_summaries_expire_and_foreign_rows_in_the_hash_are_ignored(
    redis_server: RedisServer,
) -> None:
    """A row that is not a summary is skipped, an expired one is dropped, a live one counts."""

    async def scenario() -> None:
        broadcaster = Broadcaster(redis_server.url)
        await broadcaster.start()
        shared = shared_receipts_of(broadcaster.backend)
        assert shared is not None
        key = f"{DEFAULT_STREAM}:receipts"
        with redis.Redis(port=redis_server.port) as r:
            r.hset(key, "stranger", "not json")
        await broadcaster.call_backend(lambda: shared.write_receipts("w1", [("a", "e:1", 2)], 0.3))
        await broadcaster.call_backend(lambda: shared.write_receipts("w2", [("b", "e:2", 1)], 30))
        summaries = await broadcaster.call_backend(shared.read_receipts)
        assert summaries == {"w1": [("a", "e:1", 2)], "w2": [("b", "e:2", 1)]}
        await asyncio.sleep(0.4)
        summaries = await broadcaster.call_backend(shared.read_receipts)
        assert summaries == {"w2": [("b", "e:2", 1)]}
        with redis.Redis(port=redis_server.port) as r:
            assert not r.hexists(key, "w1")  # the dead worker's row is gone
        await broadcaster.call_backend(lambda: shared.write_receipts("w2", [], 30))
        assert await broadcaster.call_backend(shared.read_receipts) == {}
        await broadcaster.close()

    run(scenario(), timeout=30)
