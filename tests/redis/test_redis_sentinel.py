"""Redis behind Sentinel: one primary, one replica, three sentinels, all started here.

Publishing and reading follow the new primary after a failover (forced with ``SENTINEL
FAILOVER`` and by SIGKILL of the primary, while a publisher runs at about 500 events/s and
100 WebSocket clients listen to a worker process); every event ``apublish`` confirmed reaches
every client once, in order. A replica promoted without the newest entries starts a new
epoch: resuming from before it is ``resume_unavailable``, never a silent gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from livepanel import BackendUnavailable, Broadcaster, Event
from livepanel.backends.redis import DEFAULT_STREAM, RedisBackend
from livepanel.client import Client, ResumeUnavailable, connect
from livepanel.protocol import parse_id
from tests.client.helpers import FAST, Collector
from tests.conftest import LogCapture
from tests.faults.helpers import Balancer, server_processes, tracebacks
from tests.redis.redis_helpers import (
    RedisServer,
    SentinelSet,
    Tick,
    apublish_retrying,
    nothing_more,
    numbers,
    redis_info,
    run,
    started,
    take,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.redis

RATE = 500  # events per second
CLIENTS = 100
FAST_RECONNECT = {"reconnect_delay": 0.02, "reconnect_max_delay": 0.1}


@pytest.fixture
def sentinel_set(start_redis: Callable[..., RedisServer]) -> SentinelSet:
    """A primary, its replica and three sentinels on free loopback ports."""
    return SentinelSet(start_redis)


def stream_length(port: int) -> int:
    with redis.Redis(port=port, socket_timeout=2) as r:
        return int(r.xlen(DEFAULT_STREAM))


def epoch_of(event: Event) -> str:
    assert event.id is not None
    return parse_id(event.id)[0]


def test_a_promoted_replica_without_the_newest_entries_starts_a_new_epoch(
    start_redis: Callable[..., RedisServer],
) -> None:
    """The replica is promoted holding events 0-2 while the primary also took 3 and 4; the
    readers that delivered 3 and 4 (two processes) reconnect to it (same address, as behind
    a proxy), one retires the epoch and the other follows: live subscribers of both miss
    nothing written since, and a since from before is refused, whether it names a lost
    event or a surviving one."""
    sync_now = ["--repl-diskless-sync-delay", "0"]
    primary = start_redis(args=sync_now)
    replica = start_redis(args=[*sync_now, "--replicaof", "127.0.0.1", str(primary.port)])
    wait_for(
        lambda: redis_info(replica.port, "replication").get("master_link_status") == "up",
        "the replica to sync",
    )

    async def scenario() -> None:
        balancer = Balancer([primary.port])
        async with balancer.running():
            url = f"redis://127.0.0.1:{balancer.port}/0"
            b = Broadcaster(RedisBackend(url, **FAST_RECONNECT))
            other = Broadcaster(RedisBackend(url, **FAST_RECONNECT))
            async with (
                started(b),
                started(other),
                b.subscribe() as live,
                other.subscribe() as elsewhere,
            ):
                kept = [await b.apublish(Tick(n=n)) for n in range(3)]
                await asyncio.to_thread(
                    wait_for, lambda: stream_length(replica.port) == 3, "3 entries replicated"
                )
                with redis.Redis(port=replica.port) as r:
                    r.replicaof("NO", "ONE")  # promoted with 0-2 only
                lost = [await b.apublish(Tick(n=n)) for n in (3, 4)]
                assert numbers(await take(live, 5)) == [0, 1, 2, 3, 4]
                assert numbers(await take(elsewhere, 5)) == [0, 1, 2, 3, 4]
                balancer.backends = [replica.port]
                await asyncio.to_thread(primary.kill)
                await apublish_retrying(b, 5)
                assert numbers(await take(live, 1)) == [5]
                await asyncio.sleep(0.2)
                later = await apublish_retrying(b, 6)
                assert numbers(await take(live, 1)) == [6]
                assert numbers(await take(elsewhere, 2)) == [5, 6]
                assert await nothing_more(live)
                assert await nothing_more(elsewhere, within=0.05)
                assert epoch_of(later) != epoch_of(kept[0])
                for since in (lost[1].id, kept[2].id):
                    async with b.subscribe(since=since) as late:
                        assert late.resumed is False, since
                async with b.subscribe(since=later.id) as fresh:
                    assert fresh.resumed is True

    run(scenario())


@dataclass
class Listener:
    """One WebSocket client of the worker: the numbers it received and when."""

    client: Client
    received: list[tuple[int, float]] = field(default_factory=list)
    ids: dict[int, str] = field(default_factory=dict)
    gaps: int = 0
    task: asyncio.Task[None] | None = None

    async def listen(self) -> None:
        for _ in range(20):  # one pass per ResumeUnavailable: bounded
            try:
                async for event in self.client:
                    self.received.append((int(event.payload["n"]), time.monotonic()))
                    self.ids[int(event.payload["n"])] = event.id or ""
                return
            except ResumeUnavailable:
                self.gaps += 1


@dataclass
class Publisher:
    """apublish at RATE events/s, each attempt with its own number, never retried."""

    broadcaster: Broadcaster
    acked: dict[int, float] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    attempts: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        while not stop.is_set() and self.attempts < RATE * 30:
            n = self.attempts
            self.attempts += 1
            task = asyncio.ensure_future(self._one(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, start + self.attempts / RATE - time.monotonic()))
        await asyncio.gather(*tasks)

    async def _one(self, n: int) -> None:
        try:
            await self.broadcaster.apublish(Tick(n=n))
        except BackendUnavailable:
            self.failed.add(n)
        else:
            self.acked[n] = time.monotonic()


def longest_pause(times: list[float]) -> float:
    ordered = sorted(times)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


@pytest.mark.parametrize("how", ["sentinel-failover", "sigkill"])
def test_failover_under_load_loses_no_confirmed_event(
    sentinel_set: SentinelSet, tmp_path: Path, how: str
) -> None:
    """A worker process with 100 WebSocket clients and a publisher at 500 events/s on
    redis+sentinel://; the primary fails over. Every client receives every confirmed event
    exactly once and in order; the numbers are printed for docs/redis-production.md."""
    url = sentinel_set.url(reconnect_delay="0.02", reconnect_max_delay="0.1")
    old_primary = sentinel_set.primary.port
    with server_processes(["uvicorn-wsproto"], tmp_path, url) as (worker,):

        async def scenario() -> tuple[Publisher, list[Listener], float, Collector, int]:
            backend = RedisBackend.from_url(url, timeout=1.0, wait_timeout=0.5)
            publisher = Publisher(Broadcaster(backend))
            listeners = [
                Listener(connect(worker.ws_url, max_retries=50, **FAST)) for _ in range(CLIENTS)
            ]
            await asyncio.gather(*(listener.client.__aenter__() for listener in listeners))
            for listener in listeners:
                listener.task = asyncio.ensure_future(listener.listen())
            stop = asyncio.Event()
            producer = asyncio.ensure_future(publisher.run(stop))
            try:
                await wait_until(
                    lambda: len(publisher.acked) >= RATE, 10, "1 s of confirmed events"
                )
                began = time.monotonic()
                if how == "sigkill":
                    await asyncio.to_thread(sentinel_set.primary.kill)
                else:
                    await asyncio.to_thread(sentinel_set.failover)
                await asyncio.to_thread(
                    wait_for,
                    lambda: sentinel_set.primary_port() not in (None, old_primary),
                    "Sentinel to name a new primary",
                )
                failover = time.monotonic() - began
                if how == "sigkill":  # the crashed server comes back, as a replica
                    await asyncio.to_thread(sentinel_set.primary.start)
                confirmed = len(publisher.acked)
                await wait_until(
                    lambda: len(publisher.acked) >= confirmed + RATE // 2,
                    20,
                    "events confirmed by the new primary",
                )
                stop.set()
                await producer
                last = max(publisher.acked)
                for listener in listeners:
                    await wait_until(
                        lambda li=listener: any(n == last for n, _ in li.received),
                        20,
                        "the last confirmed event at every client",
                    )
                # a client that was away across the failover comes back: it gets what it
                # missed, or resume_unavailable; never a silent gap
                before = [n for n, t in listeners[0].received if t < began][-1]
                late = connect(worker.ws_url, since=listeners[0].ids[before], **FAST)
                await late.__aenter__()
                resumer = Collector(late)
                await resumer.wait_until(
                    lambda: (
                        bool(resumer.gaps) or any(e.payload["n"] == last for e in resumer.events)
                    ),
                    20,
                )
                await late.close()
                await resumer.task
                return publisher, listeners, failover, resumer, before
            finally:
                stop.set()
                await asyncio.gather(producer, return_exceptions=True)
                for listener in listeners:
                    await listener.client.close()
                await asyncio.gather(
                    *(li.task for li in listeners if li.task), return_exceptions=True
                )
                await publisher.broadcaster.close()

        publisher, listeners, failover, resumer, before = run(scenario(), timeout=90)
    acked = publisher.acked
    received = [[n for n, _ in listener.received] for listener in listeners]
    report = {
        "published": publisher.attempts,
        "acknowledged": len(acked),
        "reported_failed": len(publisher.failed),
        "delivered": min(len(got) for got in received),
        "lost": sum(len(set(acked) - set(got)) for got in received),
        "duplicates": sum(len(got) - len(set(got)) for got in received),
        "resume_unavailable": sum(listener.gaps for listener in listeners),
        "sentinel_failover_ms": round(1000 * failover),
        "delivery_gap_ms": round(
            1000 * max(longest_pause([t for _, t in li.received]) for li in listeners)
        ),
        "publish_gap_ms": round(1000 * longest_pause(list(acked.values()))),
    }
    report["late_client"] = "resume_unavailable" if resumer.gaps else "resumed"
    print(f"\nfailover ({how}, {CLIENTS} clients, {RATE}/s): {report}")
    assert report["lost"] == 0
    assert report["duplicates"] == 0
    # in the stream's order (concurrent apublish calls may enter it in any order)
    assert len({tuple(n for n in got if n in acked) for got in received}) == 1
    # a client away across the failover gets what it missed, or resume_unavailable
    if resumer.gaps:
        assert isinstance(resumer.items[0], ResumeUnavailable)
    else:
        order = received[0]
        missed = [n for n in order[order.index(before) + 1 :] if n in acked]
        assert [int(e.payload["n"]) for e in resumer.events if e.payload["n"] in acked] == missed
    assert not tracebacks(worker), worker.output()


def test_a_sentinel_url_reaches_the_primary_and_follows_it(sentinel_set: SentinelSet) -> None:
    """RedisBackend(sentinels=..., service=...) publishes and reads through the primary that
    Sentinel names, before and after SENTINEL FAILOVER, continuing from its last id."""
    sentinels = [f"127.0.0.1:{s.port}" for s in sentinel_set.sentinels]

    async def scenario() -> None:
        b = Broadcaster(RedisBackend(sentinels=sentinels, service="mymaster", **FAST_RECONNECT))
        async with started(b), b.subscribe() as live:
            confirmed = [await b.apublish(Tick(n=n)) for n in range(3)]
            await asyncio.to_thread(sentinel_set.failover)
            await asyncio.to_thread(
                wait_for,
                lambda: sentinel_set.primary_port() == sentinel_set.replica.port,
                "the failover",
            )
            for n in range(3, 500):  # each attempt its own number; stop after 3 more
                try:
                    confirmed.append(await b.apublish(Tick(n=n)))
                except BackendUnavailable:  # the old primary, until Sentinel demotes it
                    await asyncio.sleep(0.05)
                if len(confirmed) == 6:
                    break
            wanted = numbers(confirmed)
            received: list[int] = []
            while wanted[-1] not in received:
                received.extend(numbers(await take(live, 1, timeout=15)))
            assert [n for n in received if n in wanted] == wanted
            assert len(received) == len(set(received))
            # a since from around the failover replays what followed it, or is refused (the
            # reader found the stream rolled back); never a silent gap
            settled = await apublish_retrying(b, 1000, timeout=15)
            order = [*wanted, 1000]
            for event in [*confirmed, settled]:
                after = order[order.index(int(event.payload["n"])) + 1 :]
                async with b.subscribe(since=event.id) as late:
                    if event is settled:
                        assert late.resumed is True
                    if not late.resumed:
                        continue
                    replayed: list[int] = []
                    while after and after[-1] not in replayed:
                        replayed.extend(numbers(await take(late, 1)))
                    assert [n for n in replayed if n in after] == after

    run(scenario(), timeout=45)
    with contextlib.suppress(redis.RedisError), redis.Redis(port=sentinel_set.replica.port) as r:
        assert r.role()[0] == b"master"


def test_sentinels_that_require_a_password(
    start_redis: Callable[..., RedisServer], server_logs: LogCapture
) -> None:
    """sentinel_password= in the URL authenticates to the sentinels (the servers need none);
    the password appears in no log line or repr."""
    password = "sentinel-s3cret"
    sentinel_set = SentinelSet(start_redis, password=password)

    async def scenario() -> None:
        backend = RedisBackend.from_url(sentinel_set.url(sentinel_password=password))
        assert password not in repr(backend)
        async with started(Broadcaster(backend)) as b, b.subscribe() as live:
            await b.apublish(Tick(n=1))
            assert numbers(await take(live, 1)) == [1]

    run(scenario())
    assert password not in server_logs.text()
    assert "sentinel_password=***" in server_logs.text()
