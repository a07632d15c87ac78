"""ClientStream, the client's place in the stream without I/O: frames in, events and decisions
out."""

from __future__ import annotations

from typing import Any

import pytest

from livepanel.client import ResumeUnavailable
from livepanel.client.stream import ACK_INTERVAL, STABLE_AFTER, ClientStream, Phase
from livepanel.client.wire import Closed, FrameReceived, InvalidFrame

STAMP = "2026-02-21T10:00:00.000Z"


def welcome(last: str = "e1:0", heartbeat: float = 25.0) -> FrameReceived:
    payload = {"connectionId": "c1", "heartbeatInterval": heartbeat, "lastEventId": last}
    return FrameReceived({"type": "welcome", "timestamp": STAMP, "payload": payload})


def event(event_id: str, kind: str = "session.killed") -> FrameReceived:
    payload = {"sessionKey": "s1", "agentId": "a1"}
    return FrameReceived({"type": kind, "timestamp": STAMP, "payload": payload, "id": event_id})


def error(code: str) -> FrameReceived:
    return FrameReceived(
        {"type": "error", "timestamp": STAMP, "payload": {"code": code, "message": "m"}}
    )


def opened(**kwargs: Any) -> ClientStream:
    stream = ClientStream("ws://localhost/ws", **kwargs)
    stream.begin()
    stream.receive(welcome(), now=0.0)
    return stream


def test_welcome_opens_the_stream_and_sets_where_to_resume() -> None:
    """Before any event, the next connection resumes from welcome's lastEventId."""
    stream = ClientStream("ws://localhost/ws")
    assert stream.begin() == [("batch", "1")]
    assert stream.phase is Phase.CONNECTING
    stream.receive(welcome("e1:9", heartbeat=5.0), now=0.0)
    assert (stream.phase, stream.heartbeat, stream.connection_id) == (Phase.OPEN, 5.0, "c1")
    assert stream.begin() == [("since", "e1:9"), ("batch", "1")]


def test_events_are_yielded_in_order_and_move_the_resume_point() -> None:
    """Each event is taken once, in order; its id is where the next connection resumes."""
    stream = opened(types=("session.*",))
    stream.receive(event("e1:1"), now=0.1)
    stream.receive(event("e1:2"), now=0.1)
    taken = [stream.take(), stream.take(), stream.take()]
    assert [getattr(item, "id", None) for item in taken] == ["e1:1", "e1:2", None]
    assert stream.begin() == [("types", "session.*"), ("since", "e1:2"), ("batch", "1")]


def test_resume_unavailable_is_a_gap_in_place_and_resumes_from_the_newest_id() -> None:
    """The gap is raised where it is, naming what was asked; the stream goes on live."""
    stream = ClientStream("ws://localhost/ws", since="e0:5")
    stream.begin()
    stream.receive(welcome("e1:3"), now=0.0)
    stream.receive(error("resume_unavailable"), now=0.0)
    stream.receive(event("e1:4"), now=0.0)
    gap = stream.take()
    assert isinstance(gap, ResumeUnavailable)
    assert (gap.since, gap.last_event_id) == ("e0:5", "e1:3")
    assert getattr(stream.take(), "id", None) == "e1:4"


def test_a_clean_close_ends_the_stream_and_any_other_loses_the_connection() -> None:
    """1000 after welcome ends iteration; another code is a loss with its reason."""
    ended = opened()
    ended.receive(Closed(1000), now=1.0)
    assert ended.phase is Phase.ENDED
    assert ended.phase.done
    lost = opened()
    lost.receive(Closed(1013, "slow consumer"), now=1.0)
    assert lost.phase is Phase.OPEN
    assert lost.lost_reason == "closed with code 1013: slow consumer"


def test_close_moves_to_closing_once_and_ignores_frames_after() -> None:
    """closing() is true the first time only; a welcome after it changes nothing."""
    stream = ClientStream("ws://localhost/ws")
    assert stream.closing() is True
    assert stream.closing() is False
    stream.receive(welcome(), now=0.0)
    assert stream.phase is Phase.CLOSING


def test_invalid_frames_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    """A frame that is not a JSON object is logged and yields nothing."""
    stream = opened()
    stream.receive(InvalidFrame("[1]", "a frame must be a JSON object"), now=0.0)
    assert stream.take() is None
    assert "skipped a server frame" in caplog.text


def test_acks_are_coalesced_to_one_per_interval() -> None:
    """The newest pending ack goes out at most once per ACK_INTERVAL, unless forced."""
    stream = opened()
    stream.ack("e1:1")
    assert stream.take_ack(now=10.0) == {"type": "ack", "payload": {"id": "e1:1"}}
    stream.ack("e1:2")
    stream.ack("e1:3")
    assert stream.take_ack(now=10.0 + ACK_INTERVAL / 2) is None
    assert stream.take_ack(now=10.0 + ACK_INTERVAL / 2, force=True) == {
        "type": "ack",
        "payload": {"id": "e1:3"},
    }
    assert stream.take_ack(now=20.0) is None
    with pytest.raises(ValueError, match="malformed event id"):
        stream.ack("yesterday")


def test_backoff_grows_gives_up_and_starts_afresh_after_a_stable_connection() -> None:
    """Delays stay under the capped step; max_retries in a row give up; a connection that
    stayed up STABLE_AFTER seconds earns a fresh count."""
    stream = opened()
    delays = [stream.next_delay(1.0, 4.0, 3, now=1.0) for _ in range(4)]
    assert delays[3] is None
    for delay, step in zip(delays[:3], (1.0, 2.0, 4.0), strict=True):
        assert delay is not None
        assert 0 <= delay <= step
    stream.begin()
    stream.reconnecting()
    stream.receive(welcome(), now=100.0)
    assert stream.next_delay(1.0, 4.0, 3, now=100.0 + STABLE_AFTER) is not None
    assert stream.attempt == 1
