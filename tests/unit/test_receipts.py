"""Acks and receipts without sockets: marks, a lying client, a second worker, confirm."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from livepanel import Broadcaster, MemoryBackend, Receipt
from livepanel.events import SessionKilled
from livepanel.receipts import check_confirm, count_receipts

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def killed(n: int) -> SessionKilled:
    return SessionKilled(session_key=f"s{n}", agent_id="a")


def test_an_ack_counts_for_every_earlier_event_of_its_epoch_only() -> None:
    """A row counts for its id and every earlier one of the same epoch, never another epoch's."""
    rows = [("alice", "e:5", 1), ("bob", "e:2", 2), ("carol", "x:9", 1), ("", "e:7", 1)]
    assert count_receipts("e:3", rows) == Receipt("e:3", frozenset({"alice"}), 2)
    assert count_receipts("e:2", rows).connections == 4
    with pytest.raises(ValueError, match="malformed event id"):
        count_receipts("nonsense", rows)


def test_a_lying_client_cannot_acknowledge_events_that_do_not_exist_yet() -> None:
    """An ack beyond the newest delivered event is taken as that event: a later event of the
    stream is not confirmed by a client that claimed it in advance."""

    async def scenario() -> None:
        broadcaster = Broadcaster()
        first = broadcaster.publish(killed(1))
        assert first.id is not None
        epoch = first.id.split(":")[0]
        async with broadcaster.connection(user="mallory") as conn:
            assert conn.acks is not None
            assert conn.acks.record(f"{epoch}:999999")  # a future id: clamped to the newest
            assert conn.acks.id == first.id
            assert not conn.acks.record("otherepoch:1")  # another epoch: ignored
            assert not conn.acks.record("garbage")
            later = await broadcaster.apublish(killed(2))
            assert later.id is not None
            assert (await broadcaster.receipts(first.id)).users == {"mallory"}
            assert (await broadcaster.receipts(later.id)).connections == 0
        await broadcaster.close()

    run(scenario())


def test_an_older_ack_never_moves_the_mark_back_and_a_closed_connection_stops_counting() -> None:
    """Acks arrive out of order from a confused client: the newest one stands."""

    async def scenario() -> None:
        broadcaster = Broadcaster()
        ids = [broadcaster.publish(killed(n)).id for n in range(3)]
        async with broadcaster.connection(user="alice") as conn:
            assert conn.acks is not None
            conn.acks.record(str(ids[2]))
            assert not conn.acks.record(str(ids[0]))
            assert (await broadcaster.receipts(str(ids[1]))).connections == 1
        assert (await broadcaster.receipts(str(ids[1]))).connections == 0
        await broadcaster.close()

    run(scenario())


def test_in_process_consumers_never_ack() -> None:
    """``subscribe()`` consumers are not dashboards: no mark, no receipt."""

    async def scenario() -> None:
        broadcaster = Broadcaster()
        async with broadcaster.connection(dashboard=False) as conn:
            assert conn.acks is None
        await broadcaster.close()

    run(scenario())


def test_receipts_count_a_second_worker_sharing_the_backend_and_confirm_returns_early() -> None:
    """Two broadcasters on one memory backend stand for two workers: each sees the other's
    acks through the shared summaries, and ``confirm`` returns as soon as they suffice."""

    async def scenario() -> None:
        backend = MemoryBackend()
        here, there = Broadcaster(backend), Broadcaster(backend)
        await here.start()
        await there.start()
        async with there.connection(user="bob") as bob:
            assert bob.acks is not None
            waiting = asyncio.create_task(here.apublish(killed(1), confirm=1, within=5.0))
            deadline = time.monotonic() + 5
            while there.last_event_id == backend.start_id:  # delivered to the other worker
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            started = time.monotonic()
            bob.acks.record(there.last_event_id)
            event = await waiting
            assert time.monotonic() - started < 1.0
            assert event.id is not None
            assert (await here.receipts(event.id)).users == {"bob"}
        await here.close()
        await there.close()

    run(scenario())


def test_confirm_that_is_never_met_returns_the_event_after_within() -> None:
    """Nobody acks: ``apublish`` still returns the stored event, after ``within`` seconds."""

    async def scenario() -> None:
        broadcaster = Broadcaster()
        started = time.monotonic()
        event = await broadcaster.apublish(killed(1), confirm=1, within=0.3)
        assert 0.3 <= time.monotonic() - started < 2.0
        assert event.id is not None
        await broadcaster.close()

    run(scenario())


@pytest.mark.parametrize(("confirm", "within"), [(-1, 1.0), (True, 1.0), (1, -0.5), (1, "5")])
def test_confirm_and_within_are_checked_before_anything_is_published(
    confirm: Any, within: Any
) -> None:
    """A wrong ``confirm`` or ``within`` raises ``ValueError`` and publishes nothing."""
    broadcaster = Broadcaster()
    with pytest.raises(ValueError, match="apublish"):
        run(broadcaster.apublish(killed(1), confirm=confirm, within=within))
    assert broadcaster.stats()["published"] == 0
    assert check_confirm(0, 0) == 0.0
