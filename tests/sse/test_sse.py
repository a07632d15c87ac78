"""Server-Sent Events on the same endpoint (SPEC section 9), read by a plain HTTP client
(httpx streaming, no livepanel code) from real servers: the same frames, ids, heartbeats,
resume with Last-Event-ID, and the same refusals as a WebSocket handshake."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from livepanel import Broadcaster, LivePanelApp, LivePanelMiddleware
from livepanel.events import SessionKilled
from tests.integration.helpers import AUTH, TIMEOUT, admin_only, basic
from tests.servers import SERVERS, RunningServer, run_server

STREAM = {"Accept": "text/event-stream"}


def killed(n: int) -> SessionKilled:
    return SessionKilled(session_key=f"s{n}", agent_id="a1")


class Messages:
    """The SSE messages of a response, parsed as the EventSource spec reads them."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()
        self.comments: list[str] = []

    def next(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for _ in range(1000):  # bounded: lines of one message, comments included
            line = next(self.lines)
            if line == "":
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            fields[name] = json.loads(value) if name == "data" else value
        raise AssertionError("no message")

    def next_event(self) -> dict[str, Any]:
        for _ in range(50):
            message = self.next()
            if "id" in message:
                return message
        raise AssertionError("no event")


@pytest.fixture(params=SERVERS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def broadcaster() -> Broadcaster:
    return Broadcaster()


@pytest.fixture
def server(kind: str, broadcaster: Broadcaster) -> Iterator[RunningServer]:
    app = LivePanelApp(broadcaster, auth=admin_only(), heartbeat_interval=0.3)
    with run_server(app, kind) as running:
        yield running


def stream(url: str, headers: dict[str, str] | None = None) -> Any:
    client = httpx.Client(timeout=httpx.Timeout(TIMEOUT), trust_env=False)
    return client, client.stream("GET", url, headers={**STREAM, **AUTH, **(headers or {})})


def test_sse_sends_welcome_events_with_ids_and_heartbeat_comments(
    server: RunningServer, broadcaster: Broadcaster
) -> None:
    """welcome first (event: welcome), then each event as event/id/data with the wire JSON,
    and `: ping` after a heartbeat interval of silence; the SSE headers are set."""
    client, request = stream(f"{server.http_url}/")
    with client, request as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        messages = Messages(response)
        welcome = messages.next()
        assert welcome["event"] == "welcome"
        assert welcome["data"]["type"] == "welcome"
        published = [broadcaster.publish(killed(n)) for n in range(3)]
        for event in published:
            message = messages.next_event()
            assert (message["event"], message["id"]) == ("session.killed", event.id)
            assert message["data"] == event.to_dict()
        time.sleep(0.7)  # silence on purpose: more than two heartbeat intervals of it
        after = broadcaster.publish(killed(3))
        assert messages.next_event()["id"] == after.id
        assert "ping" in messages.comments  # the heartbeat came as a comment, no frame


def test_sse_resumes_with_last_event_id_without_gap_or_duplicate(
    server: RunningServer, broadcaster: Broadcaster
) -> None:
    """A reconnect with Last-Event-ID gets exactly the events after it, then live ones."""
    first = [broadcaster.publish(killed(n)) for n in range(5)]
    client, request = stream(f"{server.http_url}/", {"Last-Event-ID": first[1].id or ""})
    with client, request as response:
        messages = Messages(response)
        assert messages.next()["event"] == "welcome"
        later = broadcaster.publish(killed(5))
        got = [messages.next_event()["id"] for _ in range(4)]
        assert got == [e.id for e in first[2:]] + [later.id]


def test_sse_types_filter_and_since_in_the_query(
    server: RunningServer, broadcaster: Broadcaster
) -> None:
    """?types= and ?since= work as on WebSocket."""
    start = broadcaster.publish(killed(0))
    broadcaster.publish("agent.status", {"agentId": "a", "status": "idle", "activeSessionCount": 0})
    wanted = broadcaster.publish(killed(1))
    client, request = stream(f"{server.http_url}/?types=session.*&since={start.id}")
    with client, request as response:
        messages = Messages(response)
        assert messages.next()["event"] == "welcome"
        assert messages.next_event()["id"] == wanted.id


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": basic("admin", "wrong")}, 401),
        ({"Origin": "https://evil.example"}, 403),
    ],
)
def test_sse_is_refused_as_a_websocket_handshake_would_be(
    server: RunningServer, headers: dict[str, str], status: int
) -> None:
    """Wrong credentials: 401 with the Basic challenge; a foreign origin: 403; JSON bodies."""
    client, request = stream(f"{server.http_url}/", headers)
    with client, request as response:
        assert response.status_code == status
        response.read()
        assert json.loads(response.text)["error"] in ("unauthorized", "origin_not_allowed")
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Basic")


def test_sse_counts_against_max_connections(kind: str) -> None:
    """A stream holds a connection slot: the next one gets 429 at max_connections=1."""
    app = LivePanelApp(Broadcaster(), auth=admin_only(), max_connections=1)
    with run_server(app, kind) as server:
        client, request = stream(f"{server.http_url}/")
        with client, request as response:
            messages = Messages(response)  # kept: dropping it would end the stream
            assert messages.next()["event"] == "welcome"
            other, second = stream(f"{server.http_url}/")
            with other, second as refused:
                assert refused.status_code == 429


@pytest.mark.parametrize("mount", ["middleware", "mount"])
def test_sse_through_the_middleware_and_a_mount(mount: str) -> None:
    """LivePanelMiddleware at /ws and Starlette's Mount("/ws") serve the stream too."""
    broadcaster = Broadcaster()
    if mount == "middleware":
        app: Any = LivePanelMiddleware(Starlette(), path="/ws", broadcaster=broadcaster, auth=None)
        path = "/ws"
    else:
        app = Starlette(routes=[Mount("/ws", app=LivePanelApp(broadcaster, auth=None))])
        path = "/ws/"
    with run_server(app, "uvicorn-websockets-sansio") as server:
        client, request = stream(f"{server.http_url}{path}")
        with client, request as response:
            messages = Messages(response)
            assert messages.next()["event"] == "welcome"
            event = broadcaster.publish(killed(1))
            assert messages.next_event()["id"] == event.id


def test_a_plain_get_without_the_stream_accept_still_gets_426(server: RunningServer) -> None:
    """Other plain GETs keep the 426 answer."""
    answer = httpx.get(f"{server.http_url}/", headers=AUTH, timeout=TIMEOUT, trust_env=False)
    assert answer.status_code == 426


def test_attack_a_stream_that_is_never_read_is_ended_not_buffered(kind: str) -> None:
    """A client that opens a stream and never reads it: its queue fills and the stream is
    ended (a slow consumer), never buffered without bound; other streams go on."""
    import socket

    broadcaster = Broadcaster(queue_size=16)
    app = LivePanelApp(broadcaster, auth=admin_only())
    with run_server(app, kind) as server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((server.host, server.port))
        request = (
            f"GET / HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
            f"Accept: text/event-stream\r\nAuthorization: {AUTH['Authorization']}\r\n\r\n"
        )
        sock.sendall(request.encode())
        try:
            client, stream_request = stream(f"{server.http_url}/")
            with client, stream_request as response:
                messages = Messages(response)
                assert messages.next()["event"] == "welcome"
                payload = {"jobId": "j", "command": "c", "exitCode": 0, "durationMs": 1}
                sent = 0
                while sent < 400 and not broadcaster.stats()["slow_disconnects"]:
                    output = {**payload, "stdout": "x" * 16000}  # 400 of 16 kB: more than fit
                    event = broadcaster.publish("cron.executed", output)
                    assert messages.next_event()["id"] == event.id  # the reader keeps up
                    sent += 1
                assert broadcaster.stats()["slow_disconnects"] == 1
                assert sent < 400
        finally:
            sock.close()


def test_sse_state_frame_on_state_1(server: RunningServer, broadcaster: Broadcaster) -> None:
    """?state=1 works as on WebSocket: a `state` message after welcome, then live events."""
    broadcaster.publish(killed(0))  # session.killed of an unknown key: sessions stays empty
    broadcaster.publish("session.created", {"sessionKey": "s1", "agentId": "a1", "kind": "direct"})
    client, request = stream(f"{server.http_url}/?state=1")
    with client, request as response:
        messages = Messages(response)
        assert messages.next()["event"] == "welcome"
        state = messages.next()
        assert state["event"] == "state"
        entries = state["data"]["payload"]["collections"]["sessions"]["entries"]
        assert [e["payload"]["sessionKey"] for e in entries] == ["s1"]


def test_attack_sse_keeps_audiences(kind: str) -> None:
    """Over SSE too, a connection never receives an event addressed to another audience."""
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=admin_only(), audiences=lambda p, s: {"team:a"})
    with run_server(app, kind) as server:
        client, request = stream(f"{server.http_url}/")
        with client, request as response:
            messages = Messages(response)
            assert messages.next()["event"] == "welcome"
            broadcaster.publish(killed(1), audience={"team:b"})
            mine = broadcaster.publish(killed(2), audience={"team:a"})
            assert messages.next_event()["id"] == mine.id


def test_a_page_of_an_allowed_origin_may_read_the_stream_and_its_refusal() -> None:
    """Cross-origin, from an allowed origin: the stream and a 401 carry
    Access-Control-Allow-Origin for that origin (a page's fetch can read them); a same-origin
    request or a refused origin gets no CORS header."""
    page = "https://panel.example.com"
    app = LivePanelApp(Broadcaster(), auth=admin_only(), allowed_origins=[page])
    with run_server(app, "uvicorn-websockets-sansio") as server:
        client, request = stream(f"{server.http_url}/", {"Origin": page})
        with client, request as response:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == page
            assert "origin" in response.headers["vary"].lower()
        wrong = {"Origin": page, "Authorization": basic("admin", "nope")}
        client, request = stream(f"{server.http_url}/", wrong)
        with client, request as refused:
            assert refused.status_code == 401
            assert refused.headers["access-control-allow-origin"] == page
        client, request = stream(f"{server.http_url}/", {"Origin": "https://evil.example"})
        with client, request as foreign:
            assert foreign.status_code == 403
            assert "access-control-allow-origin" not in foreign.headers


def test_metrics_count_event_streams_as_their_own_transport(kind: str) -> None:
    """stats()['connections_by_transport'] (livepanel_connections{transport}) tells SSE
    streams and WebSockets apart."""
    broadcaster = Broadcaster()
    with run_server(LivePanelApp(broadcaster, auth=admin_only()), kind) as server:
        client, request = stream(f"{server.http_url}/")
        with client, request as response:
            messages = Messages(response)
            assert messages.next()["event"] == "welcome"
            assert broadcaster.stats()["connections_by_transport"] == {"sse": 1}


def test_a_cors_fetch_of_the_stream_from_an_allowed_page_passes_a_no_cors_one_does_not() -> None:
    """Sec-Fetch-Site: cross-site is refused before the throttle unless the request is a
    WebSocket or a CORS fetch, which carry an Origin for the origin policy to judge."""
    page = "https://panel.example.com"
    app = LivePanelApp(Broadcaster(), auth=admin_only(), allowed_origins=[page])
    with run_server(app, "uvicorn-wsproto") as server:
        cors = {"Origin": page, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
        client, request = stream(f"{server.http_url}/", cors)
        with client, request as response:
            assert response.status_code == 200
        no_cors = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
        client, request = stream(f"{server.http_url}/", no_cors)
        with client, request as refused:
            assert refused.status_code == 403
