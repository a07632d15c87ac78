"""Redis killed and restarted under clients attached through the endpoint of a real worker
process: with persistence they keep their connections and lose no confirmed event; without
it, a client resuming from before the loss is told resume_unavailable, never left with a
silent gap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from livepanel import BackendUnavailable, Broadcaster
from livepanel.client import ResumeUnavailable, connect
from tests.client.helpers import FAST, Collector
from tests.faults.helpers import server_processes, tracebacks
from tests.redis.redis_helpers import RedisServer, Tick, apublish_retrying, run

pytestmark = pytest.mark.redis

OUTAGE = 2.0


def test_attached_clients_outlast_a_redis_restart_and_lose_no_confirmed_event(
    persistent_redis: RedisServer, tmp_path: Path
) -> None:
    """Kill Redis for two seconds while a publisher keeps trying: four clients attached to a
    worker stay connected and receive every confirmed event once, in order."""
    confirmed: list[int] = []
    failures = 0
    with server_processes(["uvicorn-wsproto"], tmp_path, persistent_redis.url) as (worker,):

        async def scenario() -> list[Collector]:
            nonlocal failures
            publisher = Broadcaster(persistent_redis.url)
            clients = [connect(worker.ws_url, max_retries=50, **FAST) for _ in range(4)]
            for client in clients:
                await client.__aenter__()
            collectors = [Collector(client) for client in clients]
            stop = asyncio.Event()

            async def publish() -> None:
                nonlocal failures
                for attempt in range(5000):  # each attempt its own number: retries tell apart
                    if stop.is_set():
                        return
                    try:
                        await publisher.apublish(Tick(n=attempt))
                        confirmed.append(attempt)
                    except BackendUnavailable:
                        failures += 1
                        await asyncio.sleep(0.02)
                    await asyncio.sleep(0.005)

            producer = asyncio.ensure_future(publish())
            try:
                await wait_for(lambda: len(confirmed) >= 20, "20 events before the outage")
                await asyncio.to_thread(persistent_redis.kill)
                killed = time.monotonic()
                await wait_for(lambda: failures > 0, "a failed apublish")
                await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - killed)))  # the outage
                await asyncio.to_thread(persistent_redis.start)
                after = len(confirmed)
                await wait_for(lambda: len(confirmed) >= after + 20, "20 events after it", 15)
                stop.set()
                await producer
                last = confirmed[-1]
                for collector in collectors:
                    await collector.wait_until(
                        lambda c=collector: any(e.payload["n"] == last for e in c.events), 15
                    )
                assert [client.reconnects for client in clients] == [0] * 4
                for client, collector in zip(clients, collectors, strict=True):
                    await client.close()
                    await collector.task
                return collectors
            finally:
                stop.set()
                await asyncio.gather(producer, return_exceptions=True)
                await publisher.close()

        collectors = run(scenario(), timeout=60)
    assert failures > 0
    kept = set(confirmed)
    for collector in collectors:
        received = [int(e.payload["n"]) for e in collector.events]
        assert [n for n in received if n in kept] == confirmed  # none lost, in order
        assert len(received) == len(set(received))  # none twice
        assert not collector.gaps
    assert not tracebacks(worker), worker.output()


def test_a_client_resuming_from_before_redis_lost_its_data_is_told_resume_unavailable(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis restarts empty (no persistence): a client that was away during the restart and
    comes back with an id of the lost history gets ResumeUnavailable, then live events."""
    with server_processes(["uvicorn-wsproto"], tmp_path, redis_server.url) as (worker,):

        async def scenario() -> None:
            publisher = Broadcaster(redis_server.url)
            try:
                async with connect(worker.ws_url, **FAST) as client:
                    collector = Collector(client)
                    for n in range(5):
                        await publisher.apublish(Tick(n=n))
                    await collector.wait_events(5)
                    await client.close()
                    await collector.task
                since = client.last_event_id
                assert since is not None
                await asyncio.to_thread(redis_server.restart)  # the history is gone
                await apublish_retrying(publisher, 100)  # a new epoch begins
                async with connect(worker.ws_url, since=since, **FAST) as late:
                    collector = Collector(late)
                    await collector.wait_until(lambda: bool(collector.gaps))
                    await publisher.apublish(Tick(n=101))
                    await collector.wait_until(
                        lambda: any(e.payload["n"] == 101 for e in collector.events)
                    )
                    # the gap first; then live, in order (100 too, when the worker's reader
                    # was still reconnecting as the client arrived)
                    assert isinstance(collector.items[0], ResumeUnavailable)
                    assert [e.payload["n"] for e in collector.events] in ([100, 101], [101])
            finally:
                await publisher.close()

        run(scenario(), timeout=60)
    assert not tracebacks(worker), worker.output()


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition()`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
