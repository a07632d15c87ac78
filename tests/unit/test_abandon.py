"""A closed connection lets go at once: its queue is freed, its slot given back, and a writer
stuck in ``send`` is cancelled after ABANDON_AFTER; a state frame is in flight until taken."""

from __future__ import annotations

import asyncio

import pytest

import livepanel.connection
from livepanel import Broadcaster
from livepanel.connection import CloseReason
from livepanel.outbox import DeliveryCounters, Outbox


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
