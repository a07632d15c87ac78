"""slow_consumer="conflate": a reader that falls behind skips superseded changes and still ends
in the server's state; it is closed with 1013 only when nothing queued could be replaced."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from livepanel import Broadcaster, Event
from livepanel.connection import CloseReason
from livepanel.protocol import parse_id
from livepanel.state import StateFold, conflation_key

QUEUE_SIZE = 3
KEYED = ("session.created", "session.killed", "agent.status", "gateway.status")


def payload(kind: str, n: int) -> dict[str, Any]:
    return {
        "session.created": {"sessionKey": f"s{n % 3}", "agentId": "a1", "kind": "direct"},
        "session.killed": {"sessionKey": f"s{n % 3}", "agentId": "a1"},
        "agent.status": {"agentId": f"a{n % 2}", "status": "idle", "activeSessionCount": n},
        "gateway.status": {"status": "running", "version": "1", "uptime": float(n)},
        "cron.executed": {"jobId": "j", "command": "c", "exitCode": 0, "durationMs": n},
    }[kind]


steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("publish"), st.sampled_from((*KEYED, "cron.executed")), st.integers(0, 9)
        ),
        st.tuples(st.just("read"), st.just(""), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(steps=steps)
def test_a_conflating_reader_ends_in_the_servers_state_or_closes_only_when_it_must(
    steps: list[tuple[str, str, int]],
) -> None:
    """Whatever the order of publishes and reads, the reader's fold is the server's."""

    async def scenario() -> None:
        broadcaster = Broadcaster(queue_size=QUEUE_SIZE, slow_consumer="conflate")
        fold: StateFold | None = None

        def read(conn: Any) -> None:
            nonlocal fold
            for frame in conn.take():
                data = json.loads(frame.text)
                if data["type"] == "state":
                    last = data["payload"]["lastEventId"]
                    fold = StateFold(parse_id(last)[0], start_id=last)
                    continue
                assert fold is not None
                fold.apply(Event.from_dict(data))

        async with broadcaster.connection() as conn:
            await conn.subscribe(["*"], None, state=True)
            for action, kind, n in steps:
                if action == "read":
                    read(conn)
                    continue
                full = conn.outbox.live_count >= QUEUE_SIZE
                queued = [f.event for f in conn.outbox if f.live and f.event is not None]
                event = broadcaster.publish(kind, payload(kind, n))
                if conn.closed:
                    assert conn.close_reason is CloseReason.SLOW_CONSUMER
                    key = conflation_key(event)
                    assert full, "closed with room in the queue"
                    assert key is None or all(conflation_key(e) != key for e in queued)
                    return
            read(conn)
            server = await broadcaster.state()
            assert fold is not None
            assert fold.last_event_id == server["lastEventId"] or not steps
            for name, collection in server["collections"].items():
                if name == "cronRuns":
                    continue  # never conflated: a reader that kept up has them all
                mine = [e.id for e in fold.snapshot().collections[name]]
                assert mine == [e["id"] for e in collection["entries"]], name
        await broadcaster.close()

    asyncio.run(scenario())
