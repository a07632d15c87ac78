"""Resume with since: exactly the missed events, in order, no duplicate, then live ones."""

from __future__ import annotations

import json
import threading
from urllib.parse import quote

from livepanel import Broadcaster, LivePanelApp
from tests.integration.helpers import (
    Serve,
    admin_only,
    agent_status,
    expect_error,
    expect_frame,
    expect_welcome,
    ids,
    open_ws,
    recv_events,
    recv_json,
    recv_until,
    session_created,
)


def _seen_then_missed(serve: Serve) -> tuple[Broadcaster, Serve, str, list[str]]:
    """See three events, disconnect, miss four: (broadcaster, server, last seen id, missed ids)."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        seen = [session_created(broadcaster, n) for n in range(3)]
        assert ids(recv_events(ws, 3)) == [e.id for e in seen]
    missed = [session_created(broadcaster, n).id or "" for n in range(3, 7)]
    return broadcaster, server, seen[-1].id or "", missed


def test_since_in_the_url_replays_the_missed_events_then_live(serve: Serve) -> None:
    """Reconnecting with ?since=<last seen> gets exactly the missed events, then live ones."""
    broadcaster, server, last_seen, missed = _seen_then_missed(serve)
    with open_ws(server, f"since={quote(last_seen)}") as ws:
        assert expect_welcome(ws)["lastEventId"] == missed[-1]
        assert ids(recv_events(ws, 4)) == missed
        live = [session_created(broadcaster, n).id for n in range(7, 9)]
        assert ids(recv_events(ws, 2)) == live
    assert broadcaster.stats()["replayed"] == 4


def test_since_in_a_subscribe_message_replays_the_missed_events(serve: Serve) -> None:
    """A subscribe message carrying since replays the missed events, then goes on live."""
    broadcaster, server, last_seen, missed = _seen_then_missed(serve)
    with open_ws(server) as ws:
        expect_welcome(ws)
        ws.send(json.dumps({"type": "subscribe", "payload": {"types": ["*"], "since": last_seen}}))
        assert ids(recv_events(ws, 4)) == missed
        live = session_created(broadcaster, 9)
        assert recv_json(ws)["id"] == live.id


def test_resume_respects_the_type_filter(serve: Serve) -> None:
    """?types=...&since=... replays only the missed events that match the filter."""
    broadcaster = Broadcaster()
    start = session_created(broadcaster, 0)
    agent_status(broadcaster, 1)
    wanted = session_created(broadcaster, 1)
    agent_status(broadcaster, 2)
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, f"types=session.*&since={start.id}") as ws:
        expect_welcome(ws)
        agent_status(broadcaster, 3)
        live = session_created(broadcaster, 2)
        assert ids(recv_events(ws, 2)) == [wanted.id, live.id]


def test_since_the_welcome_id_of_an_empty_stream_replays_everything(serve: Serve) -> None:
    """welcome.lastEventId of an empty stream is a valid since: it replays every event after."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server) as ws:
        start = expect_welcome(ws)["lastEventId"]
    published = [session_created(broadcaster, n).id for n in range(3)]
    with open_ws(server, f"since={quote(start)}") as ws:
        expect_welcome(ws)
        assert ids(recv_events(ws, 3)) == published


def test_since_the_newest_event_replays_nothing(serve: Serve) -> None:
    """A since naming the newest event replays nothing and goes straight to live events."""
    broadcaster = Broadcaster()
    newest = session_created(broadcaster, 0)
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, f"since={newest.id}") as ws:
        assert expect_welcome(ws)["lastEventId"] == newest.id
        live = session_created(broadcaster, 1)
        assert recv_json(ws)["id"] == live.id


def test_a_replay_longer_than_queue_size_is_delivered_whole(serve: Serve) -> None:
    """queue_size bounds live events only: a 50-event replay reaches a queue_size=4 client."""
    broadcaster = Broadcaster(queue_size=4)
    since = session_created(broadcaster, 0).id
    missed = [session_created(broadcaster, n).id for n in range(1, 51)]
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, f"since={since}") as ws:
        expect_welcome(ws)
        assert ids(recv_events(ws, 50)) == missed
        live = session_created(broadcaster, 51)
        assert recv_json(ws)["id"] == live.id
    assert broadcaster.stats()["slow_disconnects"] == 0


def test_resume_during_a_publishing_burst_has_no_gap_and_no_duplicate(serve: Serve) -> None:
    """Resuming while a thread publishes delivers every event after since exactly once, in order."""
    broadcaster = Broadcaster(history=100_000, queue_size=100_000)
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    since = session_created(broadcaster, 0).id or ""
    published: list[str] = []
    stop = threading.Event()

    def publisher() -> None:
        for n in range(1, 20_000):
            published.append(session_created(broadcaster, n).id or "")
            if stop.is_set() and n > 200:
                return

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        with open_ws(server, f"since={since}") as ws:
            expect_welcome(ws)
            stop.set()
            thread.join(10)
            marker = agent_status(broadcaster, 0)
            frames = recv_until(ws, marker.id or "", limit=len(published) + 2)
    finally:
        stop.set()
        thread.join(10)
    assert ids(frames) == [*published, marker.id]


def test_since_trimmed_from_history_gets_resume_unavailable_then_live(serve: Serve) -> None:
    """A since no longer in history (history=5) gets resume_unavailable, then live events."""
    broadcaster = Broadcaster(history=5)
    old = session_created(broadcaster, 0)
    for n in range(1, 11):
        session_created(broadcaster, n)
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, f"since={old.id}") as ws:
        expect_welcome(ws)
        expect_error(ws, "resume_unavailable")
        live = session_created(broadcaster, 11)
        assert recv_json(ws)["id"] == live.id


def test_since_from_another_epoch_gets_resume_unavailable_then_live(serve: Serve) -> None:
    """A since issued by another stream (another epoch) gets resume_unavailable, never a gap."""
    elsewhere = session_created(Broadcaster(), 0)
    broadcaster = Broadcaster()
    session_created(broadcaster, 0)
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, f"since={elsewhere.id}") as ws:
        expect_welcome(ws)
        expect_error(ws, "resume_unavailable")
        live = session_created(broadcaster, 1)
        assert recv_json(ws)["id"] == live.id


def test_since_beyond_the_stream_gets_resume_unavailable(serve: Serve) -> None:
    """A since of this epoch naming an event that never existed gets resume_unavailable."""
    broadcaster = Broadcaster()
    newest = session_created(broadcaster, 0).id or ""
    future = newest.rpartition(":")[0] + ":999"
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        ws.send(json.dumps({"type": "subscribe", "payload": {"since": future}}))
        expect_error(ws, "resume_unavailable")
        live = session_created(broadcaster, 1)
        assert recv_json(ws)["id"] == live.id


def test_malformed_since_in_the_url_gets_invalid_message(serve: Serve) -> None:
    """?since=<garbage> gets invalid_message after welcome; the connection stays usable."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, "since=not-an-id") as ws:
        expect_welcome(ws)
        expect_error(ws, "invalid_message")
        live = session_created(broadcaster, 1)
        assert recv_json(ws)["id"] == live.id


def test_malformed_since_in_subscribe_gets_invalid_message(serve: Serve) -> None:
    """A subscribe whose since is not an id (or not a string) gets invalid_message."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        for since in ("garbage", 42, ["x"]):
            ws.send(json.dumps({"type": "subscribe", "payload": {"since": since}}))
            expect_error(ws, "invalid_message")
        ws.send(json.dumps({"type": "ping"}))
        expect_frame(ws, "pong")
