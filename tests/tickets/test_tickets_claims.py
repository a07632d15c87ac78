"""Single use needs claims every worker shares: Tickets refuses to run without them, and
claims hold however many redemptions race."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any
from urllib.parse import quote

import pytest

from livepanel import Broadcaster, ConfigurationError, MemoryBackend, TicketAuth, Tickets
from livepanel.backends.memory import InProcessClaims
from tests.backends.contract_backend import ContractOnlyBackend
from tests.conftest import LogCapture
from tests.redis.redis_helpers import run, started

SECRET = "c" * 32


def ticket_scope(text: str) -> Any:
    return {"type": "websocket", "headers": [], "query_string": f"ticket={quote(text)}".encode()}


def test_two_workers_without_single_use_claims_are_refused_at_construction() -> None:
    """A backend written against base.py alone keeps no claims: with workers=2 a ticket
    could be used once on each worker, so Tickets refuses, saying what to do."""
    broadcaster = Broadcaster(ContractOnlyBackend())
    with pytest.raises(ConfigurationError, match=r"workers=2.*no single-use claims") as refused:
        Tickets(SECRET, broadcaster=broadcaster, workers=2)
    assert "redis://" in str(refused.value)
    assert "workers=1" in str(refused.value)


def test_web_concurrency_counts_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """WEB_CONCURRENCY (what uvicorn --workers and gunicorn -w default to) says how many;
    the memory backend's claims live in one process, which is not enough for three."""
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    with pytest.raises(ConfigurationError, match=r"WEB_CONCURRENCY=3.*claims in one process"):
        Tickets(SECRET, broadcaster=Broadcaster(MemoryBackend()))
    assert Tickets(SECRET, broadcaster=Broadcaster(), workers=1).workers == 1  # explicit wins


@pytest.mark.parametrize(("variable", "workers"), [("two", None), ("0", None), (None, 0)])
def test_a_worker_count_that_is_no_count_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str | None, workers: int | None
) -> None:
    """WEB_CONCURRENCY=two, WEB_CONCURRENCY=0 and workers=0 are configuration errors."""
    if variable is not None:
        monkeypatch.setenv("WEB_CONCURRENCY", variable)
    with pytest.raises(ConfigurationError, match="workers"):
        Tickets(SECRET, broadcaster=Broadcaster(), workers=workers)


def test_one_worker_without_claims_keeps_single_use_in_the_tickets_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With one worker (WEB_CONCURRENCY unset) a contract-only backend works as before: the
    Tickets object remembers the nonces."""
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    tickets = Tickets(SECRET, broadcaster=Broadcaster(ContractOnlyBackend()))
    text = tickets.issue("alice")

    async def scenario() -> tuple[object, object]:
        return await tickets.redeem(text), await tickets.redeem(text)

    first, second = run(scenario())
    assert first is not None
    assert second is None


def test_the_default_broadcaster_is_checked_at_the_first_ticket(
    monkeypatch: pytest.MonkeyPatch, server_logs: LogCapture
) -> None:
    """Without broadcaster= the backend is known only at use: redeem() raises, and TicketAuth
    refuses the ticket (401) with the reason logged, never accepting it unchecked."""
    monkeypatch.delenv("LIVEPANEL_BACKEND_URL", raising=False)
    tickets = Tickets(SECRET, workers=2)  # the default broadcaster: memory
    auth = TicketAuth(tickets, redact_logs=False)
    text = tickets.issue("alice")

    async def scenario() -> object:
        with pytest.raises(ConfigurationError, match="workers=2"):
            await tickets.redeem(text)
        return await auth(ticket_scope(text))

    assert run(scenario()) is None
    assert "refusing every ticket: Tickets: 2 workers (workers=2)" in server_logs.text()
    assert [r for r in server_logs.records if r.levelno == logging.ERROR]
    assert text not in server_logs.text()


# ---------------------------------------------------------------------- racing claims


def test_claims_racing_from_threads_are_won_once() -> None:
    """Sixteen threads claim one key at once: exactly one wins."""
    claims = InProcessClaims()
    barrier = threading.Barrier(16)
    won: list[bool] = []

    def claim() -> None:
        barrier.wait()
        won.append(claims.claim("ticket:n1", ttl=30.0))

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 15 + [True]


def test_one_ticket_redeemed_concurrently_on_a_memory_backend_is_accepted_once() -> None:
    """Fifty redemptions of one ticket at once, on one loop: one succeeds."""
    tickets = Tickets(SECRET, broadcaster=Broadcaster(MemoryBackend()))
    text = tickets.issue("alice")

    async def scenario() -> list[object]:
        async with started(tickets.broadcaster):
            return list(await asyncio.gather(*(tickets.redeem(text) for _ in range(50))))

    results = run(scenario())
    assert sum(result is not None for result in results) == 1


@pytest.mark.redis
def test_one_ticket_raced_on_two_workers_sharing_redis_is_accepted_once(redis_url: str) -> None:
    """Two workers (two broadcasters on one Redis, workers=2 declared) redeem one ticket
    forty times at once between them: exactly one redemption is accepted."""
    one = Tickets(SECRET, broadcaster=Broadcaster(redis_url), workers=2)
    two = Tickets(SECRET, broadcaster=Broadcaster(redis_url), workers=2)
    text = one.issue("alice")

    async def scenario() -> list[object]:
        async with started(one.broadcaster), started(two.broadcaster):
            attempts = [t.redeem(text) for _ in range(20) for t in (one, two)]
            return list(await asyncio.gather(*attempts))

    results = run(scenario())
    assert sum(result is not None for result in results) == 1
