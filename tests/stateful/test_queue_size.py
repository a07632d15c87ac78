"""What counts against queue_size. SPEC 3: "A replay is delivered whole, however long;
queue_size bounds only live events waiting for a client."

The model in test_broadcast_model.py found that the queue once counted every frame in it:
welcome, pongs and replayed events too. The cases below pin the fix down: a Connection counts
live events only.
"""

from __future__ import annotations

import asyncio

from livepanel import Broadcaster
from livepanel.connection import CloseReason
from livepanel.protocol import control_frame, welcome_frame


def publish(broadcaster: Broadcaster, n: int) -> str:
    event = broadcaster.publish("session.killed", {"sessionKey": f"s{n}", "agentId": "a1"})
    assert event.id is not None
    return event.id


def test_a_replay_longer_than_queue_size_leaves_room_for_live_events() -> None:
    """After a replay of 9 events, one live event does not close a queue_size=4 connection."""

    async def scenario() -> CloseReason | None:
        broadcaster = Broadcaster(history=50, queue_size=4)
        await broadcaster.start()
        first = publish(broadcaster, 0)
        for n in range(1, 10):
            publish(broadcaster, n)
        async with broadcaster.connection() as conn:
            assert await conn.subscribe(("*",), first) is True
            publish(broadcaster, 10)
            return conn.close_reason

    assert asyncio.run(scenario()) is None


def test_welcome_and_pongs_do_not_count_against_queue_size() -> None:
    """welcome and two pongs wait; the first live event still fits a queue_size=2 queue."""

    async def scenario() -> CloseReason | None:
        broadcaster = Broadcaster(queue_size=2)
        await broadcaster.start()
        async with broadcaster.connection() as conn:
            conn.push_control(welcome_frame("c1", 25.0, conn.last_event_id))
            conn.push_control(control_frame("pong", {}))
            conn.push_control(control_frame("pong", {}))
            publish(broadcaster, 1)
            return conn.close_reason

    assert asyncio.run(scenario()) is None


def test_the_drop_policy_never_drops_welcome() -> None:
    """slow_consumer="drop" drops the oldest event, never the welcome waiting before it."""

    async def scenario() -> str:
        broadcaster = Broadcaster(queue_size=2, slow_consumer="drop")
        await broadcaster.start()
        async with broadcaster.connection() as conn:
            conn.push_control(welcome_frame("c1", 25.0, conn.last_event_id))
            for n in range(3):
                publish(broadcaster, n)
            return next(iter(conn.outbox)).text

    assert '"type":"welcome"' in asyncio.run(scenario())
