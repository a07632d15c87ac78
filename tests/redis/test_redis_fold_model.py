"""The state fold kept in Redis (the publish script's Lua) and ``StateFold`` (every process's
Python) give the same state for the same events, whatever the events and batches."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livepanel.backends.redis.codec import FIELD, decode_state, encode_entry
from livepanel.backends.redis.replay import seed_fold
from livepanel.backends.redis.scripts import Scripts, state_spec
from livepanel.backends.redis.settings import StreamKeys
from livepanel.events import AgentStatus, CronExecuted, Event, GatewayStatus, SessionCreated
from livepanel.protocol import make_id
from livepanel.state import StateFold
from tests.redis.redis_helpers import RedisServer

pytestmark = pytest.mark.redis

REGISTERED = (SessionCreated, AgentStatus, CronExecuted, GatewayStatus)  # imported to register
COUNTER = itertools.count()  # one stream per example
KEYS = st.sampled_from(["s1", "s2", "s3", "s4", "s\u00e9", 'q"uote', "back\\slash"])


def session_created(key: str) -> Event:
    return Event("session.created", {"sessionKey": key, "agentId": "a1", "kind": "direct"})


def session_killed(key: str) -> Event:
    return Event("session.killed", {"sessionKey": key, "agentId": "a1"})


def agent_status(key: str) -> Event:
    payload = {"agentId": key, "status": "idle", "activeSessionCount": len(key)}
    return Event("agent.status", payload)


def cron_executed(key: str) -> Event:
    payload = {"jobId": key, "command": "c", "exitCode": 0, "durationMs": len(key)}
    return Event("cron.executed", payload)


def gateway_status(key: str) -> Event:
    return Event("gateway.status", {"status": "running", "version": key, "uptime": 1.5})


def outside_the_state(key: str) -> Event:
    return Event("test.tick", {"n": len(key)})  # a registered type of no collection


events = st.builds(
    lambda make, key: make(key),
    st.sampled_from(
        [
            session_created,
            session_created,
            session_killed,
            agent_status,
            cron_executed,
            gateway_status,
            outside_the_state,
        ]
    ),
    KEYS,
)
# the events, cut into the batches the writer would send (one script call each)
batched = st.lists(st.lists(events, min_size=1, max_size=6), min_size=1, max_size=8)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def view(collections: Any) -> dict[str, list[tuple[str | None, dict[str, Any]]]]:
    """Each collection's entries, oldest update first: their ids and payloads."""
    return {
        name: [(event.id, dict(event.payload)) for event in entries]
        for name, entries in collections.items()
    }


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=batched, limit=st.integers(min_value=1, max_value=4))
def test_the_lua_fold_and_statefold_agree(
    redis_server: RedisServer, loop: asyncio.AbstractEventLoop, batches: Any, limit: int
) -> None:
    """The same batches through the publish script on a real Redis and through StateFold:
    the state hash read back (as a new worker seeds it) equals the Python fold, entries,
    order, ids, evictions (state_limit) and the position it stands at."""
    stream = f"fold:{next(COUNTER)}"
    keys = StreamKeys.beside(stream, cluster=False)

    async def scenario() -> tuple[StateFold, StateFold, dict[str, str]]:
        client = aioredis.Redis(port=redis_server.port)
        try:
            scripts = Scripts(client)
            stored: list[Event] = []
            epoch = ""
            for batch in batches:
                epoch, ids = await scripts.append(
                    keys,
                    maxlen=10_000,
                    field=FIELD,
                    state_limit=limit,
                    texts=[encode_entry(event) for event in batch],
                    specs=[state_spec(event) for event in batch],
                )
                stored += [
                    Event(e.type, e.payload, e.timestamp, id=make_id(epoch, entry_id))
                    for e, entry_id in zip(batch, ids, strict=True)
                ]
            python = StateFold(epoch, limit=limit)
            python.apply_all(stored)
            lua = StateFold("", limit=limit)
            seed = await scripts.seed(keys)
            seed_fold(lua, await scripts.stream_state(keys, "0-0"), seed)
            return python, lua, seed[1]
        finally:
            await client.aclose()

    python, lua, fields = loop.run_until_complete(scenario())
    assert view(lua.snapshot().collections) == view(python.snapshot().collections)
    assert lua.snapshot().last_event_id == python.snapshot().last_event_id
    # the hash holds nothing more: an evicted or removed entry is gone from Redis too
    kept = sum(len(entries) for entries in python.snapshot().collections.values())
    assert len(decode_state(lua.epoch, fields)) == kept
