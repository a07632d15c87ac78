"""State on connect over a real socket: the state frame, then live events; conflate."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from livepanel import Broadcaster, Event, LivePanelApp
from livepanel.state import StateFold
from tests.integration.helpers import (
    TIMEOUT,
    Serve,
    admin_only,
    expect_error,
    expect_frame,
    expect_welcome,
    ids,
    open_ws,
    recv_events,
    recv_json,
    wait_until,
)
from tests.servers import RunningServer

LABEL = "x" * 32_000  # big frames fill the socket buffers in a few dozen events


def publish_mix(broadcaster: Broadcaster, count: int) -> list[Event]:
    """Sessions created and killed, agents changing, cron runs and the gateway."""
    events = []
    for n in range(count):
        if n % 5 == 0:
            payload = {"sessionKey": f"s{n % 40}", "agentId": "a1", "kind": "direct"}
            events.append(broadcaster.publish("session.created", payload))
        elif n % 5 == 1:
            payload = {"sessionKey": f"s{(n * 7) % 40}", "agentId": "a1"}
            events.append(broadcaster.publish("session.killed", payload))
        elif n % 5 == 2:
            payload = {"agentId": f"a{n % 9}", "status": "idle", "activeSessionCount": n}
            events.append(broadcaster.publish("agent.status", payload))
        elif n % 5 == 3:
            payload = {"jobId": "j", "command": "c", "exitCode": 0, "durationMs": n}
            events.append(broadcaster.publish("cron.executed", payload))
        else:
            payload = {"status": "running", "version": "1", "uptime": float(n)}
            events.append(broadcaster.publish("gateway.status", payload))
    return events


def client_fold(state: dict[str, Any]) -> StateFold:
    """What a client holds after a state frame: the entries folded in stream order."""
    last = state["payload"]["lastEventId"]
    fold = StateFold(last.partition(":")[0], start_id=last)
    entries = [
        Event.from_dict(entry)
        for collection in state["payload"]["collections"].values()
        for entry in collection["entries"]
    ]
    fold.apply_all(sorted(entries, key=lambda e: int((e.id or "0:0").partition(":")[2])))
    fold.last_event_id = last
    return fold


def view(fold: StateFold) -> dict[str, list[str | None]]:
    return {name: [e.id for e in entries] for name, entries in fold.snapshot().collections.items()}


def server_fold(events: list[Event]) -> StateFold:
    fold = StateFold((events[0].id or "").partition(":")[0])
    fold.apply_all(events)
    return fold


def test_a_client_connecting_after_1000_events_gets_the_state_then_live_events(
    serve: Serve,
) -> None:
    """?state=1 after 1,000 events: the right collections, then every later event live."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    events = publish_mix(broadcaster, 1000)
    with open_ws(server, "state=1", max_size=None) as ws:
        welcome = expect_welcome(ws)
        state = expect_frame(ws, "state")
        assert state["payload"]["lastEventId"] == welcome["lastEventId"] == events[-1].id
        fold = client_fold(state)
        assert view(fold) == view(server_fold(events))
        assert len(state["payload"]["collections"]["cronRuns"]["entries"]) == 20
        later = publish_mix(broadcaster, 30)
        for frame in recv_events(ws, 30):
            fold.apply(Event.from_dict(frame))
        assert fold.last_event_id == later[-1].id
        assert view(fold) == view(server_fold(events + later))


def test_state_replaces_resume_unavailable_when_since_is_not_retained(serve: Serve) -> None:
    """since from another epoch with state=1: a state frame, no error, then live events."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    events = publish_mix(broadcaster, 12)
    with open_ws(server, "since=0ldep0ch:7&state=1") as ws:
        expect_welcome(ws)
        state = expect_frame(ws, "state")
        assert view(client_fold(state)) == view(server_fold(events))
        live = publish_mix(broadcaster, 1)[0]
        assert recv_json(ws)["id"] == live.id
    assert broadcaster.replays["unavailable"] == 1


def test_a_resumable_since_replays_and_sends_no_state(serve: Serve) -> None:
    """since still retained with state=1: the missed events, no state frame."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    events = publish_mix(broadcaster, 10)
    with open_ws(server, f"since={events[5].id}&state=1") as ws:
        expect_welcome(ws)
        assert ids(recv_events(ws, 4)) == [e.id for e in events[6:]]


def test_without_state_an_unretained_since_still_gets_resume_unavailable(serve: Serve) -> None:
    """Asking for no state keeps section 3's answer."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    publish_mix(broadcaster, 3)
    with open_ws(server, "since=0ldep0ch:7") as ws:
        expect_welcome(ws)
        expect_error(ws, "resume_unavailable")


def test_the_state_frame_holds_only_the_filtered_collections(serve: Serve) -> None:
    """types=agent.* with state: only agents, and only agent events follow."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    publish_mix(broadcaster, 20)
    with open_ws(server, "types=agent.*&state=1") as ws:
        expect_welcome(ws)
        state = expect_frame(ws, "state")
        assert list(state["payload"]["collections"]) == ["agents"]
        assert list(state["payload"]["types"]) == ["agent.status"]
        later = [e for e in publish_mix(broadcaster, 10) if e.type == "agent.status"]
        assert ids(recv_events(ws, len(later))) == [e.id for e in later]


def test_subscribe_with_state_mid_connection_sends_the_state_then_live(serve: Serve) -> None:
    """A subscribe {"state": true} on an open connection: state, then later events."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        events = publish_mix(broadcaster, 6)
        assert ids(recv_events(ws, 6)) == [e.id for e in events]
        ws.send('{"type":"subscribe","payload":{"types":["session.*"],"state":true}}')
        state = expect_frame(ws, "state")
        assert state["payload"]["lastEventId"] == events[-1].id
        later = [e for e in publish_mix(broadcaster, 10) if e.type.startswith("session.")]
        assert ids(recv_events(ws, len(later))) == [e.id for e in later]


@contextlib.contextmanager
def stalled_state_reader(server: RunningServer) -> Iterator[ClientConnection]:
    """A client that reads its welcome and state frame, then stops reading its socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect((server.host, server.port))
    options: dict[str, Any] = {"compression": None, "max_queue": 1, "max_size": None}
    with open_ws(server, "state=1", sock=sock, ping_interval=None, **options) as ws:
        expect_welcome(ws)
        expect_frame(ws, "state")
        yield ws


def big_session(broadcaster: Broadcaster, n: int) -> Event:
    payload = {"sessionKey": f"s{n % 3}", "agentId": "a1", "kind": "direct", "label": LABEL}
    if n % 4 == 3:
        return broadcaster.publish("session.killed", {"sessionKey": f"s{n % 3}", "agentId": "a1"})
    return broadcaster.publish("session.created", payload)


def test_conflate_under_a_stalled_reader_ends_in_the_right_state_without_1013(
    serve: Serve,
) -> None:
    """slow_consumer="conflate": a stalled reader skips superseded changes, ends right."""
    broadcaster = Broadcaster(queue_size=4, slow_consumer="conflate")
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, max_size=None) as fast, stalled_state_reader(server) as slow:
        expect_welcome(fast)
        published = []
        for n in range(2000):
            published.append(big_session(broadcaster, n))
            assert recv_json(fast, timeout=2)["id"] == published[-1].id
            if broadcaster.stats()["conflated"] >= 20:
                break
        else:
            raise AssertionError("nothing was conflated")
        fold = StateFold((published[0].id or "").partition(":")[0])
        last = published[-1].id
        for _ in range(len(published) + 10):
            try:
                frame = recv_json(slow)
            except ConnectionClosed as exc:
                raise AssertionError(f"closed with {exc.rcvd}") from None
            fold.apply(Event.from_dict(frame))
            if frame["id"] == last:
                break
        assert view(fold)["sessions"] == view(server_fold(published))["sessions"]
    assert broadcaster.stats()["slow_disconnects"] == 0


def test_conflate_closes_with_1013_when_nothing_can_be_conflated(serve: Serve) -> None:
    """cron runs never supersede each other: a full queue of them closes with 1013."""
    broadcaster = Broadcaster(queue_size=4, slow_consumer="conflate")
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    payload = {"jobId": "j", "command": "c", "exitCode": 0, "durationMs": 1, "stdout": LABEL}
    with open_ws(server, max_size=None) as fast, stalled_state_reader(server):
        expect_welcome(fast)
        for _ in range(2000):
            event = broadcaster.publish("cron.executed", payload)
            assert recv_json(fast, timeout=2)["id"] == event.id
            if broadcaster.stats()["slow_disconnects"]:
                break
    wait_until(lambda: broadcaster.stats()["slow_disconnects"] == 1, what="a 1013")
    assert broadcaster.stats()["conflated"] == 0


def test_the_state_frame_holds_only_entries_the_connections_audience_may_see(
    serve: Serve,
) -> None:
    """An entry published for team:ops is not in the state of a team:dev connection."""
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=admin_only(), audiences=lambda principal, scope: {"dev"})
    server = serve(app)
    shared = {"sessionKey": "shared", "agentId": "a1", "kind": "direct"}
    secret = {"sessionKey": "ops-only", "agentId": "a1", "kind": "direct"}
    mine = {"sessionKey": "dev-only", "agentId": "a1", "kind": "direct"}
    broadcaster.publish("session.created", shared)
    broadcaster.publish("session.created", secret, audience={"ops"})
    broadcaster.publish("session.created", mine, audience={"dev"})
    with open_ws(server, "state=1") as ws:
        expect_welcome(ws)
        state = expect_frame(ws, "state")
        entries = state["payload"]["collections"]["sessions"]["entries"]
        assert [e["payload"]["sessionKey"] for e in entries] == ["shared", "dev-only"]
        assert all("audience" not in e for e in entries)
