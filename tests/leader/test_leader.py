"""run_once and leases without Redis: the in-process leases, a lease's own count of its time,
and two runners in one process (the memory backend's leases hold within it)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from livepanel import Broadcaster, MemoryBackend
from livepanel.backends.base import Backend, leases_of
from livepanel.backends.memory import InProcessLeases
from livepanel.errors import ConfigurationError
from livepanel.events import SessionKilled
from livepanel.leader import Lease, LeaseLost, run_once


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_in_process_leases_one_holder_renewals_keep_the_token_a_new_holder_gets_the_next() -> None:
    """Held: refused to others, renewed by its holder; expired or released: the next token."""
    clock = Clock()
    leases = InProcessLeases(clock)
    assert leases.acquire("job", "a", 10.0) == 1
    assert leases.acquire("job", "b", 10.0) is None
    clock.now += 9.0
    assert leases.acquire("job", "a", 10.0) == 1  # renewed: until 119
    clock.now += 9.5
    assert leases.acquire("job", "b", 10.0) is None
    clock.now += 0.6
    assert leases.acquire("job", "b", 10.0) == 2  # a's ran out
    assert leases.acquire("job", "a", 10.0) is None
    leases.release("job", "a")  # not a's: nothing happens
    assert leases.acquire("job", "a", 10.0) is None
    leases.release("job", "b")
    assert leases.acquire("job", "a", 10.0) == 3
    assert leases.acquire("other", "b", 10.0) == 1  # names are independent


def test_the_memory_and_redis_backends_declare_leases() -> None:
    """leases_of: memory's hold in this process, Redis's in every worker."""
    from livepanel.backends.redis import RedisBackend

    memory = leases_of(MemoryBackend())
    assert memory is not None
    assert memory.leases_shared is False
    assert RedisBackend.leases_shared is True


def test_a_paused_holder_that_wakes_after_its_lease_ran_out_cannot_publish() -> None:
    """The lease counts from when it was asked for, on this worker's clock, minus a margin:
    a clock that jumped past it (the process was stopped) refuses to publish."""
    clock = Clock()
    broadcaster = Broadcaster()
    backend_leases = leases_of(broadcaster.backend)
    assert backend_leases is not None
    lease = Lease(broadcaster, "job", ttl=10.0, clock=clock)

    async def scenario() -> None:
        assert await lease.renew(backend_leases)
        lease.publish(SessionKilled(session_key="s1", agent_id="a1"))
        clock.now += 8.9
        assert lease.held  # 0.1 s of its own count left
        clock.now += 0.2  # past ttl - margin, though the backend would still say it is held
        assert not lease.held
        with pytest.raises(LeaseLost, match="nothing was published"):
            lease.publish(SessionKilled(session_key="s2", agent_id="a1"))
        with pytest.raises(LeaseLost):
            await lease.apublish(SessionKilled(session_key="s3", agent_id="a1"))

    asyncio.run(scenario())
    assert broadcaster.stats()["published"] == 1


def test_run_once_refuses_a_ttl_not_longer_than_every_and_a_backend_without_leases() -> None:
    """Configuration errors say what to change."""

    async def job(lease: Lease) -> None:
        pass

    with pytest.raises(ConfigurationError, match="ttl longer than every"):
        asyncio.run(run_once(Broadcaster(), "job", job, every=5.0, ttl=5.0))
    with pytest.raises(ConfigurationError, match="every must be > 0"):
        asyncio.run(run_once(Broadcaster(), "job", job, every=0.0))

    class Bare(MemoryBackend):
        capabilities = frozenset()

    with pytest.raises(ConfigurationError, match="keeps no leases"):
        asyncio.run(run_once(Broadcaster(Bare()), "job", job, every=1.0))
    assert issubclass(Bare, Backend)


def test_two_runners_run_the_job_once_and_hand_over_when_the_holder_is_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two runners of one job in one process: one runs it; cancelling it releases the lease
    and the other runs the job on its next try, without waiting out the ttl."""
    broadcaster = Broadcaster()
    runs: list[str] = []

    def job_of(name: str) -> Any:
        async def job(lease: Lease) -> None:
            runs.append(name)
            lease.publish(SessionKilled(session_key=name, agent_id="a1"))

        return job

    async def scenario() -> None:
        first = asyncio.create_task(
            run_once(broadcaster, "job", job_of("first"), every=0.05, ttl=5)
        )
        await asyncio.sleep(0.02)
        second = asyncio.create_task(
            run_once(broadcaster, "job", job_of("second"), every=0.05, ttl=5)
        )
        for _ in range(200):  # bounded: up to 2 s
            if len(runs) >= 4:
                break
            await asyncio.sleep(0.01)
        assert set(runs) == {"first"}
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        for _ in range(200):
            if "second" in runs:
                break
            await asyncio.sleep(0.01)
        assert runs[-1] == "second"  # long before the ttl of 5 s ran out
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second

    with caplog.at_level(logging.INFO, logger="livepanel"):
        asyncio.run(scenario())
    assert "holds in this process only" in caplog.text


def test_a_job_that_raises_runs_again_and_its_message_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing job: logged by its exception's type only (it may quote what it read), retried."""
    calls = 0

    async def job(lease: Lease) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("secret-value-from-the-gateway")

    async def scenario() -> None:
        task = asyncio.create_task(run_once(Broadcaster(), "job", job, every=0.02, ttl=1))
        for _ in range(200):
            if calls >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.INFO, logger="livepanel"):
        asyncio.run(scenario())
    assert calls >= 3
    assert "raised RuntimeError" in caplog.text
    assert "secret-value" not in caplog.text


def test_a_job_outlasting_its_lease_is_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    """A run that would go on past the lease is cut off at the lease's end, and said so."""
    cancelled = asyncio.Event()

    async def job(lease: Lease) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def scenario() -> None:
        task = asyncio.create_task(run_once(Broadcaster(), "slow", job, every=0.1, ttl=0.3))
        await asyncio.wait_for(cancelled.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.INFO, logger="livepanel"):
        asyncio.run(scenario())
    assert "ran past its lease" in caplog.text
