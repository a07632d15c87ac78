"""A closed connection lets go at once: its queue is freed, its slot given back, and a writer
stuck in ``send`` is cancelled after ABANDON_AFTER; a state frame is in flight until taken."""

from __future__ import annotations

import asyncio

import pytest

import livepanel.connection
from livepanel import Broadcaster
from livepanel.connection import CloseReason
from livepanel.outbox import DeliveryCounters, Outbox
from livepanel.transports import _written


def test_a_state_frame_is_in_flight_until_the_writer_takes_it() -> None:
    """push_state: replaying until popped or taken, and its bytes counted."""
    box = Outbox(DeliveryCounters(), queue_size=4, policy="disconnect")
    assert box.push_state('{"type":"state"}')
    assert box.replaying
    assert box.state_bytes == len('{"type":"state"}')
    box.pop()
    assert not box.replaying
    box.push_state("{}")
    box.take()
    assert not box.replaying


def test_a_writer_stuck_in_send_is_abandoned_and_the_queue_freed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A send that never returns: the close frees the queue and calls when_closed at once,
    and the writer's task is cancelled ABANDON_AFTER seconds later."""
    monkeypatch.setattr(livepanel.connection, "ABANDON_AFTER", 0.05)

    async def scenario() -> tuple[int, bool, bool]:
        broadcaster = Broadcaster()
        released: list[bool] = []
        async with broadcaster.connection() as conn:
            conn.when_closed(lambda: released.append(True))
            never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            async def stuck(text: str) -> None:
                await never  # a client that stopped reading

            conn.push_control('{"type":"welcome"}')
            writer = asyncio.ensure_future(conn.write(stuck))
            await asyncio.sleep(0.01)  # the writer is inside send now
            for _ in range(5):
                conn.push_control('{"type":"pong"}')
            conn.close(CloseReason.SLOW_CONSUMER)
            queued = len(conn.outbox)
            await asyncio.wait((writer,), timeout=2.0)
        await broadcaster.close()
        return queued, bool(released), writer.cancelled()

    queued, released, cancelled = asyncio.run(scenario())
    assert queued == 0
    assert released
    assert cancelled


def _stuck_writer(
    conn: livepanel.connection.Connection,
) -> asyncio.Task[CloseReason]:
    """A writer task whose send never returns (a client that stopped reading)."""
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def stuck(text: str) -> None:
        await never

    conn.push_control('{"type":"welcome"}')
    return asyncio.ensure_future(conn.write(stuck))


def test_an_abandoned_writer_ends_the_connection_with_its_close_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The task awaiting the writer gets the close's reason when the writer is abandoned,
    not a CancelledError."""
    monkeypatch.setattr(livepanel.connection, "ABANDON_AFTER", 0.05)

    async def scenario() -> CloseReason:
        broadcaster = Broadcaster()
        async with broadcaster.connection() as conn:
            writer = _stuck_writer(conn)
            await asyncio.sleep(0.01)
            conn.close(CloseReason.SLOW_CONSUMER)
            reason = await asyncio.wait_for(_written(writer, conn), 2.0)
        await broadcaster.close()
        return reason

    assert asyncio.run(scenario()) is CloseReason.SLOW_CONSUMER


def test_a_server_that_cancels_the_connections_task_cancels_its_writer_too() -> None:
    """The server cancels the task awaiting the writer (its shutdown, hypercorn on a lost
    client): the writer is cancelled with it and the cancellation is not swallowed."""

    async def scenario() -> tuple[bool, bool]:
        broadcaster = Broadcaster()
        async with broadcaster.connection() as conn:
            writer = _stuck_writer(conn)
            waiting = asyncio.ensure_future(_written(writer, conn))
            await asyncio.sleep(0.01)
            waiting.cancel()
            await asyncio.wait((waiting, writer), timeout=2.0)
        await broadcaster.close()
        return waiting.cancelled(), writer.cancelled()

    assert asyncio.run(scenario()) == (True, True)


def test_a_writer_cancelled_by_someone_else_is_not_taken_for_an_abandon() -> None:
    """Only the connection's own abandon turns a cancelled writer into a close reason: a
    cancellation from elsewhere reaches the task awaiting it."""

    async def scenario() -> bool:
        broadcaster = Broadcaster()
        async with broadcaster.connection() as conn:
            writer = _stuck_writer(conn)
            await asyncio.sleep(0.01)
            writer.cancel()
            try:
                await asyncio.wait_for(_written(writer, conn), 2.0)
            except asyncio.CancelledError:
                raised = True
            else:
                raised = False
        await broadcaster.close()
        return raised

    assert asyncio.run(scenario())


def test_a_connection_is_entered_once() -> None:
    async def scenario() -> None:
        broadcaster = Broadcaster()
        opening = broadcaster.connection()
        async with opening:
            with pytest.raises(RuntimeError, match="entered once"):
                await opening.__aenter__()
        await broadcaster.close()

    asyncio.run(scenario())
