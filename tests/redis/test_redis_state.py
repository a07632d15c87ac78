"""The state kept in Redis: updated with each entry, shared by every worker, kept across
restarts, emptied by a new epoch."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from livepanel import Broadcaster, Event
from livepanel.state import StateFold
from tests.redis.redis_helpers import RedisServer, run, started, take, wait_until

pytestmark = pytest.mark.redis


def sessions(state: dict[str, Any]) -> list[str]:
    """The session keys of a state payload, oldest update first."""
    entries = state["collections"]["sessions"]["entries"]
    return [e["payload"]["sessionKey"] for e in entries]


def ids_of(state: dict[str, Any], collection: str) -> list[str]:
    return [e["id"] for e in state["collections"][collection]["entries"]]


async def publish_sessions(b: Broadcaster, keys: list[str], kill: tuple[str, ...] = ()) -> Event:
    last = None
    for key in keys:
        payload = {"sessionKey": key, "agentId": "a1", "kind": "direct"}
        last = await b.apublish("session.created", payload)
    for key in kill:
        last = await b.apublish("session.killed", {"sessionKey": key, "agentId": "a1"})
    assert last is not None
    return last


def test_a_second_worker_starts_with_the_state_the_first_published(redis_url: str) -> None:
    """Published through A, read on B (started later): the same state, at A's last id."""

    async def go() -> None:
        async with started(Broadcaster(redis_url)) as a:
            last = await publish_sessions(a, ["s1", "s2", "s3", "s1"], kill=("s2",))
            for n in range(25):
                payload = {"jobId": f"j{n}", "command": "c", "exitCode": 0, "durationMs": n}
                last = await a.apublish("cron.executed", payload)
            async with started(Broadcaster(redis_url)) as b:
                state = await b.state()
                assert state["lastEventId"] == last.id
                assert sessions(state) == ["s3", "s1"]
                assert len(state["collections"]["cronRuns"]["entries"]) == 20
                assert state == await a.state()

    run(go())


def test_a_worker_keeps_its_state_in_step_with_what_it_reads(redis_url: str) -> None:
    """Events published on A after B started reach B's state in stream order."""

    async def go() -> None:
        async with started(Broadcaster(redis_url)) as a, started(Broadcaster(redis_url)) as b:
            async with b.subscribe() as events:
                last = await publish_sessions(a, ["s1", "s2"], kill=("s1",))
                await take(events, 3)
            state = await b.state()
            assert state["lastEventId"] == last.id
            assert sessions(state) == ["s2"]

    run(go())


def test_the_state_survives_a_restart_of_every_worker(redis_url: str) -> None:
    """Stop every broadcaster; a new one reads the state back from Redis."""

    async def go() -> dict[str, Any]:
        async with started(Broadcaster(redis_url)) as a:
            await publish_sessions(a, ["s1", "s2"])
            return await a.state()

    before = run(go())

    async def again() -> dict[str, Any]:
        async with started(Broadcaster(redis_url)) as b:
            return await b.state()

    assert run(again()) == before
    assert sessions(before) == ["s1", "s2"]


def test_a_new_epoch_starts_with_an_empty_state(redis_server: RedisServer) -> None:
    """The stream lost (FLUSHALL, a Redis without persistence restarted): state is empty."""

    async def go() -> None:
        async with started(Broadcaster(redis_server.url)) as a:
            old = await publish_sessions(a, ["s1", "s2"])
        redis.Redis(port=redis_server.port).flushall()
        async with started(Broadcaster(redis_server.url)) as b:
            state = await b.state()
            assert sessions(state) == []
            assert state["lastEventId"].partition(":")[0] != (old.id or "").partition(":")[0]
            last = await publish_sessions(b, ["s9"])
            assert (await b.state())["lastEventId"] == last.id

    run(go())


def test_a_worker_following_a_new_epoch_empties_its_state(redis_server: RedisServer) -> None:
    """A running worker that notices the new epoch starts its state over."""

    async def go() -> None:
        async with started(Broadcaster(redis_server.url)) as a:
            await publish_sessions(a, ["s1", "s2"])
            redis.Redis(port=redis_server.port).delete("livepanel:events")
            async with started(Broadcaster(redis_server.url)) as b:
                last = await publish_sessions(b, ["s3"])
            await wait_until(lambda: a.last_event_id == last.id, what="A to follow")
            assert sessions(await a.state()) == ["s3"]

    run(go())


def test_redis_evicts_like_the_fold(redis_url: str) -> None:
    """state_limit holds in Redis too: a restarted worker sees the same entries."""

    async def go() -> None:
        async with started(Broadcaster(redis_url, state_limit=3)) as a:
            await publish_sessions(a, ["s1", "s2", "s3", "s1", "s4", "s5"])
            here = await a.state()
            assert sessions(here) == ["s1", "s4", "s5"]
            assert a.stats()["state_evicted"] == 2
        async with started(Broadcaster(redis_url, state_limit=3)) as b:
            assert await b.state() == here
        keys = redis.Redis.from_url(redis_url).hlen("livepanel:events:state")
        assert keys <= 3 + 5 + 4  # entries, bookkeeping fields, sizes: bounded

    run(go())


def test_the_seeded_fold_equals_a_fold_of_the_whole_stream(redis_url: str) -> None:
    """Whatever was published, a new worker's state is the fold of every entry."""

    async def go() -> None:
        async with started(Broadcaster(redis_url)) as a:
            published = []
            for n in range(60):
                kind = ("session.created", "session.killed", "agent.status", "gateway.status")[
                    n % 4
                ]
                payload: dict[str, Any] = {
                    "session.created": {"sessionKey": f"s{n % 7}", "agentId": "a", "kind": "cron"},
                    "session.killed": {"sessionKey": f"s{n % 5}", "agentId": "a"},
                    "agent.status": {
                        "agentId": f"a{n % 3}",
                        "status": "idle",
                        "activeSessionCount": n,
                    },
                    "gateway.status": {"status": "running", "version": "1", "uptime": n},
                }[kind]
                published.append(await a.apublish(kind, payload))
        fold = StateFold((published[0].id or "").partition(":")[0])
        fold.apply_all(published)
        async with started(Broadcaster(redis_url)) as b:
            state = await b.state()
        for name, entries in fold.snapshot().collections.items():
            assert ids_of(state, name) == [e.id for e in entries], name

    run(go())


def test_control_entries_between_events_keep_the_state_in_step(redis_url: str) -> None:
    """A revocation (a control entry in the stream) between events: every event is folded."""

    async def go() -> None:
        async with started(Broadcaster(redis_url)) as a, started(Broadcaster(redis_url)) as b:
            async with b.subscribe() as events:
                await publish_sessions(a, ["s1"])
                await a.disconnect(user="nobody")
                last = await publish_sessions(a, ["s2"])
                await take(events, 2)
            for broadcaster in (a, b):
                state = await broadcaster.state()
                assert sessions(state) == ["s1", "s2"]
            assert (await b.state())["lastEventId"] == last.id
        async with started(Broadcaster(redis_url)) as c:
            assert sessions(await c.state()) == ["s1", "s2"]

    run(go())
