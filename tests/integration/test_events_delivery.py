"""After accept: welcome first, then every event once and in order, pings, pongs and filters."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from livepanel import Broadcaster, LivePanelApp, __version__
from livepanel.events import CronExecuted
from livepanel.schema import current_fingerprint
from tests.integration.helpers import (
    TIMESTAMP,
    Serve,
    admin_only,
    agent_status,
    expect_frame,
    expect_welcome,
    ids,
    open_ws,
    recv_events,
    recv_json,
    session_created,
)

# ---------------------------------------------------------------------- welcome


def test_welcome_is_the_first_frame(serve: Serve) -> None:
    """welcome comes first, with connectionId, heartbeatInterval, lastEventId and server,
    and the registered types' schema fingerprint when they can be described."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only(), heartbeat_interval=7.5))
    with open_ws(server) as ws:
        frame = recv_json(ws)
    assert frame["type"] == "welcome"
    assert set(frame) == {"type", "timestamp", "payload"}
    assert re.match(TIMESTAMP, frame["timestamp"])
    payload = frame["payload"]
    expected = current_fingerprint()
    keys = {"connectionId", "heartbeatInterval", "lastEventId", "server"}
    assert set(payload) == (keys if expected is None else keys | {"schema"})
    assert payload.get("schema") == expected
    assert isinstance(payload["connectionId"], str)
    assert payload["connectionId"]
    assert payload["heartbeatInterval"] == 7.5
    assert payload["server"] == f"livepanel/{__version__}"
    assert isinstance(payload["lastEventId"], str)
    assert payload["lastEventId"]


def test_welcome_last_event_id_names_the_newest_event(serve: Serve) -> None:
    """welcome.lastEventId is the id of the newest event published before the connection."""
    broadcaster = Broadcaster()
    session_created(broadcaster, 1)
    newest = session_created(broadcaster, 2)
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server) as ws:
        assert expect_welcome(ws)["lastEventId"] == newest.id


def test_each_connection_gets_its_own_id(serve: Serve) -> None:
    """Two connections get two different connectionIds."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server) as one, open_ws(server) as two:
        assert expect_welcome(one)["connectionId"] != expect_welcome(two)["connectionId"]


# ---------------------------------------------------------------------- events


def test_event_frame_has_type_timestamp_payload_and_id(serve: Serve) -> None:
    """A broadcast event arrives as {type, timestamp, payload, id} with camelCase keys."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        event = broadcaster.publish(
            CronExecuted(job_id="j1", command="backup", exit_code=0, duration_ms=12)
        )
        frame = recv_json(ws)
    assert frame == {
        "type": "cron.executed",
        "timestamp": frame["timestamp"],
        "payload": {"jobId": "j1", "command": "backup", "exitCode": 0, "durationMs": 12},
        "id": event.id,
    }
    assert re.match(TIMESTAMP, frame["timestamp"])


def test_three_clients_receive_every_event_once_in_order(serve: Serve) -> None:
    """Three clients each receive every event exactly once, in publication order."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server) as a, open_ws(server) as b, open_ws(server) as c:
        clients = (a, b, c)
        for ws in clients:
            expect_welcome(ws)
        published = [session_created(broadcaster, n) for n in range(25)]
        marker = agent_status(broadcaster, 0)
        expected = [e.id for e in published] + [marker.id]
        for ws in clients:
            frames = recv_events(ws, len(expected))
            assert ids(frames) == expected
            assert [f["payload"]["sessionKey"] for f in frames[:-1]] == [f"s{n}" for n in range(25)]
    assert broadcaster.stats()["delivered"] == 3 * len(expected)


def test_events_published_from_plain_threads_arrive(serve: Serve) -> None:
    """publish() from several plain threads reaches the client, each thread's events in order."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    published: dict[int, list[str]] = {}

    def publisher(agent: int) -> None:
        published[agent] = [
            session_created(broadcaster, n, agent=f"agent-{agent}").id or "" for n in range(20)
        ]

    with open_ws(server) as ws:
        expect_welcome(ws)
        threads = [threading.Thread(target=publisher, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        assert len(published) == 4
        frames = recv_events(ws, 80)
    received = ids(frames)
    assert sorted(received) == sorted(i for batch in published.values() for i in batch)
    for agent, batch in published.items():
        own = [f["id"] for f in frames if f["payload"]["agentId"] == f"agent-{agent}"]
        assert own == batch


def test_an_invalid_event_reaches_no_client(serve: Serve) -> None:
    """An event that fails validation raises in the publisher and is never sent."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        bad: list[Any] = [
            ("session.created", {"sessionKey": "s", "agentId": "a", "kind": "bogus"}),
            ("agent.status", {"agentId": "a", "status": "idle", "activeSessionCount": -1}),
            ("no.such.type", {}),
        ]
        for kind, payload in bad:
            try:
                broadcaster.publish(kind, payload)
            except ValueError:
                continue
            raise AssertionError(f"{kind} {payload} was accepted")
        good = session_created(broadcaster, 1)
        assert recv_json(ws)["id"] == good.id


# ---------------------------------------------------------------------- ping, pong, ack


def test_client_ping_gets_pong_echoing_its_payload(serve: Serve) -> None:
    """A client ping is answered at once by a pong carrying the same payload."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        payload = {"n": 7, "nested": {"list": [1, "two"]}, "s": "é"}
        ws.send(json.dumps({"type": "ping", "payload": payload}))
        assert expect_frame(ws, "pong")["payload"] == payload
        ws.send(json.dumps({"type": "ping", "timestamp": "2026-02-21T10:00:00.123Z"}))
        assert expect_frame(ws, "pong")["payload"] == {}


def test_server_pings_after_a_heartbeat_of_silence(serve: Serve) -> None:
    """With nothing to send for heartbeat_interval seconds the server sends ping {}."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), heartbeat_interval=0.3))
    with open_ws(server) as ws:
        assert expect_welcome(ws)["heartbeatInterval"] == 0.3
        for _ in range(2):
            frame = expect_frame(ws, "ping", timeout=2)
            assert frame["payload"] == {}
            assert re.match(TIMESTAMP, frame["timestamp"])


def test_ack_is_accepted_silently(serve: Serve) -> None:
    """An ack of an event id gets no reply: the next frame is the pong of a later ping."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        event = session_created(broadcaster, 1)
        assert recv_json(ws)["id"] == event.id
        ws.send(json.dumps({"type": "ack", "payload": {"id": event.id}}))
        ws.send(json.dumps({"type": "ping", "payload": {"after": "ack"}}))
        assert expect_frame(ws, "pong")["payload"] == {"after": "ack"}


# ---------------------------------------------------------------------- filters


def test_types_query_filters_events(serve: Serve) -> None:
    """?types=session.* delivers session events only."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, "types=session.*") as ws:
        expect_welcome(ws)
        agent_status(broadcaster, 1)
        first = session_created(broadcaster, 1)
        broadcaster.publish("gateway.status", {"status": "running", "version": "1", "uptime": 3})
        second = broadcaster.publish("session.killed", {"sessionKey": "s1", "agentId": "a1"})
        agent_status(broadcaster, 2)
        marker = session_created(broadcaster, 2)
        frames = recv_events(ws, 3)
    assert ids(frames) == [first.id, second.id, marker.id]


def test_types_query_takes_several_globs(serve: Serve) -> None:
    """?types=a,b delivers the union of the globs."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, "types=agent.status,cron.*") as ws:
        expect_welcome(ws)
        session_created(broadcaster, 1)
        agent = agent_status(broadcaster, 1)
        cron = broadcaster.publish(
            "cron.executed", {"jobId": "j", "command": "c", "exitCode": 1, "durationMs": 0}
        )
        frames = recv_events(ws, 2)
    assert ids(frames) == [agent.id, cron.id]


def test_subscribe_message_replaces_the_filter(serve: Serve) -> None:
    """A subscribe message replaces the filter the URL set; it gets no reply."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, "types=session.*") as ws:
        expect_welcome(ws)
        ws.send(json.dumps({"type": "subscribe", "payload": {"types": ["agent.*"]}}))
        ws.send(json.dumps({"type": "ping", "payload": {"seq": 1}}))
        assert expect_frame(ws, "pong")["payload"] == {"seq": 1}  # the subscribe was handled
        session_created(broadcaster, 1)
        agent = agent_status(broadcaster, 1)
        session_created(broadcaster, 2)
        marker = agent_status(broadcaster, 2)
        frames = recv_events(ws, 2)
    assert ids(frames) == [agent.id, marker.id]


# ---------------------------------------------------------------------- batch


def _replayed_frames(serve: Serve, query: str) -> tuple[list[str], list[str]]:
    """Connect with ``query`` plus ``since`` after 10 published events; return (texts, ids)."""
    broadcaster = Broadcaster()
    start = session_created(broadcaster, 0)
    published = [session_created(broadcaster, n).id or "" for n in range(1, 11)]
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    texts: list[str] = []
    seen: list[str] = []
    with open_ws(server, f"{query}&since={start.id}") as ws:
        for _ in range(12):
            text = ws.recv(timeout=5)
            assert isinstance(text, str)
            texts.append(text)
            seen.extend(json.loads(line).get("id", "welcome") for line in text.split("\n"))
            if seen[-1] == published[-1]:
                break
    return texts, seen


def test_batch_packs_queued_frames_into_newline_delimited_text(serve: Serve) -> None:
    """With ?batch=1 queued frames may share a text frame, one JSON document per line."""
    texts, seen = _replayed_frames(serve, "batch=1")
    assert seen[0] == "welcome"
    assert len(seen) == 11
    assert any("\n" in text for text in texts), "nothing was batched"
    for text in texts:
        for line in text.split("\n"):
            assert isinstance(json.loads(line), dict)


def test_without_batch_every_frame_holds_one_message(serve: Serve) -> None:
    """Without ?batch=1 the same queued frames arrive one message per frame."""
    texts, seen = _replayed_frames(serve, "batch=0")
    assert len(texts) == len(seen) == 11
    assert not any("\n" in text for text in texts)
