"""run_once across two real worker processes on a real Redis: one runs the job at a time,
the other takes over when the holder is SIGKILLed, and a holder paused past its lease
(SIGSTOP, as a stalled VM or a clock that stood still) publishes nothing when it wakes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.leader.leader_worker import EVERY, TTL

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
STREAM = "leader-test:events"
RETRY = min(EVERY, TTL / 5)  # how often a worker without the lease tries to take it


class Worker:
    def __init__(self, url: str, log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.leader.leader_worker", url, STREAM],
                env=env,
                stdout=subprocess.PIPE,
                stderr=out,
                cwd=ROOT,
            )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"ready", log.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused one cannot die of SIGKILL late
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[list[Worker]]:
    started = [Worker(redis_url, tmp_path / f"worker-{n}.log") for n in range(2)]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()
        for worker in started:
            print(worker.log.read_text(errors="replace"))  # shown when the test failed


def ticks(url: str) -> list[dict[str, Any]]:
    """Every poller.tick in the stream, in stream order: their payloads."""
    client = redis.Redis.from_url(url)
    try:
        return [
            json.loads(fields[b"event"])["payload"]
            for _, fields in client.xrange(STREAM)
            if b"event" in fields
        ]
    finally:
        client.close()


def wait_for(url: str, condition: Any, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        seen = ticks(url)
        if condition(seen):
            return seen
        assert time.monotonic() < deadline, f"timed out after {timeout} s; saw {seen[-5:]}"
        time.sleep(0.05)


def holder_pid(worker_ticks: list[dict[str, Any]]) -> int:
    return int(worker_ticks[-1]["holder"].split(":")[1])


def assert_never_two_at_once(seen: list[dict[str, Any]]) -> None:
    """In stream order, tokens never go back, and each token is one holder's."""
    owners: dict[int, str] = {}
    for tick in seen:
        assert owners.setdefault(tick["term"], tick["holder"]) == tick["holder"], tick
    tokens = [tick["term"] for tick in seen]
    assert tokens == sorted(tokens), tokens


def test_one_worker_runs_the_job_and_the_other_takes_over_after_a_sigkill(
    redis_url: str, workers: list[Worker]
) -> None:
    """Only one holder publishes; SIGKILL it: the other publishes within ttl + one retry."""
    seen = wait_for(redis_url, lambda s: len(s) >= 9, timeout=10)  # three runs
    assert len({tick["holder"] for tick in seen}) == 1
    first = holder_pid(seen)
    victim = next(w for w in workers if w.process.pid == first)
    survivor = next(w for w in workers if w is not victim)
    victim.process.kill()
    killed_at = time.monotonic()
    after = wait_for(redis_url, lambda s: holder_pid(s) == survivor.process.pid, timeout=TTL + 5)
    took_over = time.monotonic() - killed_at
    print(f"took over {took_over:.2f} s after the SIGKILL (ttl {TTL} s)")
    assert took_over <= TTL + RETRY + 0.5, took_over
    assert_never_two_at_once(after)


def test_a_holder_paused_past_its_lease_publishes_nothing_when_it_wakes(
    redis_url: str, workers: list[Worker]
) -> None:
    """SIGSTOP the holder mid-run for twice the ttl: the other takes over; SIGCONT: the woken
    one's job finds its lease gone (LeaseLost), so nothing of it follows the new holder's."""
    seen = wait_for(redis_url, lambda s: len(s) >= 4, timeout=10)
    paused = next(w for w in workers if w.process.pid == holder_pid(seen))
    other = next(w for w in workers if w is not paused)
    paused.process.send_signal(signal.SIGSTOP)
    try:
        wait_for(redis_url, lambda s: holder_pid(s) == other.process.pid, timeout=TTL + 5)
        time.sleep(TTL)  # well past the paused one's lease
    finally:
        paused.process.send_signal(signal.SIGCONT)
    # the woken worker runs its loop again: give it several of its periods to misbehave
    time.sleep(4 * EVERY)
    seen = ticks(redis_url)
    pids = [int(tick["holder"].split(":")[1]) for tick in seen]
    handed_over = pids.index(other.process.pid)
    assert paused.process.pid not in pids[handed_over:], pids
    assert_never_two_at_once(seen)
    assert paused.process.poll() is None  # alive, and following


def test_redis_leases_exclude_renew_release_and_count_hands(redis_url: str) -> None:
    """On a real Redis: one holder, renewals keep the token, expiry and release hand it on
    with the next token, decided by Redis's clock."""
    from livepanel.backends.redis import RedisBackend

    async def scenario() -> None:
        backend = RedisBackend(redis_url, stream=STREAM)
        await backend.start(lambda events: None)
        try:
            assert await backend.acquire_lease("job", "a", 0.3) == 1
            assert await backend.acquire_lease("job", "b", 0.3) is None
            assert await backend.acquire_lease("job", "a", 0.3) == 1
            for _ in range(100):  # bounded: up to 2 s for the 0.3 s lease to expire
                token = await backend.acquire_lease("job", "b", 10.0)
                if token is not None:
                    break
                await asyncio.sleep(0.02)
            assert token == 2
            await backend.release_lease("job", "a")  # not a's: nothing happens
            assert await backend.acquire_lease("job", "a", 10.0) is None
            await backend.release_lease("job", "b")
            assert await backend.acquire_lease("job", "a", 10.0) == 3
        finally:
            await backend.stop()

    asyncio.run(scenario())


def test_a_worker_joining_a_stream_of_another_applications_events_is_warned(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Entries of types this process does not register (another application on the default
    stream name): one warning at start that counts them, names no type, says what to do."""
    from livepanel.backends.redis import RedisBackend

    client = redis.Redis.from_url(redis_url)
    try:
        foreign = {"type": "billing.invoice_paid", "timestamp": "2026-02-21T10:00:00.000Z"}
        for n in range(3):
            client.xadd("shared:events", {"event": json.dumps({**foreign, "payload": {"n": n}})})
        client.xadd("shared:events", {"event": "not json"})
    finally:
        client.close()

    async def join(stream: str) -> None:
        backend = RedisBackend(redis_url, stream=stream)
        await backend.start(lambda events: None)
        await backend.stop()

    with caplog.at_level(logging.WARNING, logger="livepanel"):
        asyncio.run(join("shared:events"))
    warnings = [r.getMessage() for r in caplog.records if "does not register" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith("livepanel: 3 of the newest 3 events in the Redis stream")
    assert 'stream="<app>:events"' in warnings[0]
    assert "billing" not in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="livepanel"):
        asyncio.run(join("own:events"))  # its own, empty stream: nothing to say
    assert not [r for r in caplog.records if "does not register" in r.getMessage()]
