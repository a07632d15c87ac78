"""Redis killed for two seconds under a steady apublish() load."""

from __future__ import annotations

import asyncio
import time

import pytest

from livepanel import BackendUnavailable, Broadcaster
from livepanel.backends.redis import RedisBackend
from tests.redis.redis_helpers import RedisServer, Tick, run, started, wait_until

pytestmark = pytest.mark.redis

OUTAGE = 2.0


def test_an_outage_loses_and_repeats_no_confirmed_event(persistent_redis: RedisServer) -> None:
    """Kill Redis for two seconds while a publisher keeps trying: a subscriber in another
    broadcaster sees every confirmed event once, in order.

    Each attempt carries its own number, so an attempt that Redis wrote but could not
    confirm (killed in between) is told apart from the retry that follows it.
    """
    confirmed: list[int] = []
    received: list[int] = []
    failures = 0

    async def scenario() -> int:
        nonlocal failures
        reader = RedisBackend(persistent_redis.url, reconnect_delay=0.05, reconnect_max_delay=0.5)
        async with (
            started(Broadcaster(persistent_redis.url)) as publisher,
            started(Broadcaster(reader)) as subscriber,
            subscriber.subscribe() as events,
        ):

            async def collect() -> None:
                async for event in events:
                    received.append(int(event.payload["n"]))

            stop = asyncio.Event()

            async def publish() -> int:
                nonlocal failures
                attempt = 0
                while not stop.is_set() and attempt < 5000:
                    try:
                        await publisher.apublish(Tick(n=attempt))
                        confirmed.append(attempt)
                    except BackendUnavailable:
                        failures += 1
                        await asyncio.sleep(0.02)
                    attempt += 1
                    await asyncio.sleep(0.005)
                return attempt

            collector = asyncio.ensure_future(collect())
            producer = asyncio.ensure_future(publish())
            await wait_until(lambda: len(confirmed) >= 20, what="20 events before the outage")
            await asyncio.to_thread(persistent_redis.kill)
            killed = time.monotonic()
            await wait_until(lambda: failures > 0, what="a failed apublish")
            await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - killed)))  # the outage
            await asyncio.to_thread(persistent_redis.start)
            after = len(confirmed)
            await wait_until(lambda: len(confirmed) >= after + 20, 10, "20 events after it")
            stop.set()
            attempts = await producer
            await wait_until(lambda: confirmed[-1] in received, 10, "the last event delivered")
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
            return attempts

    attempts = run(scenario())
    assert failures > 0
    kept = set(confirmed)
    assert [n for n in received if n in kept] == confirmed  # none lost, none repeated, in order
    assert len(received) == len(set(received))
    assert set(received) <= set(range(attempts))
