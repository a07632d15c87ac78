"""Revocation across workers: two broadcasters on one Redis stand for two worker processes.
A disconnect() given on one refuses, on the other, the tickets issued before it and closes
the connections that authenticated before it, once that worker heard the order."""

from __future__ import annotations

import asyncio
import time

import pytest

from livepanel import Broadcaster, Tickets
from tests.redis.redis_helpers import run, started
from tests.tickets.test_tickets import SECRET

pytestmark = pytest.mark.redis


async def heard(broadcaster: Broadcaster, user: str, since: float, timeout: float = 5.0) -> None:
    """Wait (bounded) until ``broadcaster`` heard an order naming ``user`` given after ``since``."""
    deadline = time.monotonic() + timeout
    while not broadcaster.revocations.given_since(since, user, None):
        assert time.monotonic() < deadline, "the other worker never heard the order"
        await asyncio.sleep(0.02)


def test_attack_a_ticket_issued_before_a_revocation_on_another_worker_is_refused(
    redis_url: str,
) -> None:
    """alice's ticket, issued on worker two, is refused there after worker one revoked her;
    bob's, issued at the same time, still opens."""

    async def scenario() -> tuple[bool, bool]:
        one, two = Broadcaster(redis_url), Broadcaster(redis_url)
        async with started(one), started(two):
            tickets = Tickets(SECRET, broadcaster=two, workers=2)
            alices, bobs = tickets.issue("alice"), tickets.issue("bob")
            before = time.time() - 1
            await one.disconnect(user="alice")
            await heard(two, "alice", before)
            return await tickets.redeem(alices) is None, await tickets.redeem(bobs) is not None

    alice_refused, bob_accepted = run(scenario())
    assert alice_refused
    assert bob_accepted


def test_attack_a_connection_that_authenticated_before_a_revocation_elsewhere_is_closed(
    redis_url: str,
) -> None:
    """alice authenticated on worker two before worker one revoked her; when her connection
    joins on worker two afterwards, it is closed at once, and bob's is not."""

    async def scenario() -> tuple[bool, bool]:
        one, two = Broadcaster(redis_url), Broadcaster(redis_url)
        async with started(one), started(two):
            authenticated = time.monotonic()  # when the handshake began, as the endpoint says
            await one.disconnect(user="alice")
            await heard(two, "alice", time.time() - 1)
            async with two.connection(user="alice", authenticated_at=authenticated) as alice:
                async with two.connection(user="bob", authenticated_at=authenticated) as bob:
                    return alice.closed, bob.closed

    alice_closed, bob_closed = run(scenario())
    assert alice_closed
    assert not bob_closed
