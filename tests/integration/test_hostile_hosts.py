"""The host around the endpoint, as real deployments build it: middleware that wraps
``send`` (timeouts, tracing), a publisher whose context must not leak into other users'
sends, handshakes racing a slow backend start, two servers on two event loops sharing one
Broadcaster, and a server whose ``send`` fails."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import urllib.request
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livepanel import Broadcaster, LivePanelApp, LivePanelMiddleware, MemoryBackend
from livepanel.events import SessionKilled
from tests.conftest import LogCapture
from tests.integration.helpers import (
    TIMEOUT,
    admin_only,
    expect_welcome,
    open_ws,
    recv_json,
)
from tests.servers import run_server

# every server the issue names: uvicorn's three WebSocket implementations, and hypercorn
KINDS = ("uvicorn-websockets-sansio", "uvicorn-websockets", "uvicorn-wsproto", "hypercorn")
each_server = pytest.mark.parametrize("kind", KINDS)

# what a tracing middleware keeps per request: a span, a request user, a Sentry scope
request_context: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="-")


def killed(n: int) -> SessionKilled:
    return SessionKilled(session_key=f"s{n}", agent_id="a1")


class Tracing:
    """A host middleware: names each request in a contextvar and wraps ``send``, recording
    the context and task each ``websocket.send`` runs in, under ``asyncio.timeout``."""

    def __init__(self, app: Any, broadcaster: Broadcaster) -> None:
        self.app = app
        self.broadcaster = broadcaster
        self.seen: list[tuple[str, str, bool]] = []  # (request, context seen, in a task)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        name = scope.get("query_string", b"").decode() or scope["path"]
        request_context.set(name)
        if scope["type"] == "http" and scope["path"] == "/publish":
            self.broadcaster.publish(killed(1))  # published in the HTTP request's context
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return

        async def traced(message: Any) -> None:
            async with asyncio.timeout(TIMEOUT):  # needs a task, as timeout middleware does
                if message["type"] == "websocket.send":
                    task = asyncio.current_task() is not None
                    self.seen.append((name, request_context.get(), task))
                await send(message)

        await self.app(scope, receive, traced)


@each_server
def test_send_runs_in_the_connections_own_task_and_context(kind: str) -> None:
    """A send wrapper under asyncio.timeout keeps working; each send sees its connection's
    own contextvars and task, never the publishing request's."""
    broadcaster = Broadcaster()
    host = Tracing(LivePanelApp(broadcaster, auth=admin_only()), broadcaster)
    with run_server(host, kind) as server:
        sends = exchange(server, broadcaster, host)
    assert len(sends) >= 8  # two welcomes and six events
    assert all(seen == name for name, seen, _ in sends), sends
    assert all(in_task for _, _, in_task in sends)


def exchange(server: Any, broadcaster: Broadcaster, host: Tracing) -> list[Any]:
    """Two dashboards; three POSTs that publish; what the wrapped sends saw."""
    with open_ws(server, "user=a", path="/") as a, open_ws(server, "user=b", path="/") as b:
        expect_welcome(a)
        expect_welcome(b)
        for _ in range(3):
            request = urllib.request.Request(f"{server.http_url}/publish", method="POST")
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                assert answer.status == 204
            assert recv_json(a)["type"] == "session.killed"
            assert recv_json(b)["type"] == "session.killed"
    return [entry for entry in host.seen if entry[0] in ("user=a", "user=b")]


class SlowStart(MemoryBackend):
    """A backend whose start awaits, as a Redis across a network does."""

    async def start(self, deliver: Any, control: Any = None) -> str:
        await asyncio.sleep(0.3)
        return await super().start(deliver, control)


@each_server
def test_max_connections_holds_when_handshakes_race_a_slow_backend_start(kind: str) -> None:
    """Four handshakes at once on a cold, slow-starting broadcaster with max_connections=1:
    one is accepted, three get 429."""
    app = LivePanelApp(Broadcaster(SlowStart()), auth=admin_only(), max_connections=1)
    with run_server(app, kind) as server:
        outcomes = race(server)
    assert sorted(outcomes, key=str) == [101, 429, 429, 429]


def race(server: Any) -> list[object]:
    """Four handshakes released at once; their outcomes (101 or the refusal's status)."""
    outcomes: list[object] = []
    opened: list[Any] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait(TIMEOUT)
        try:
            ws = open_ws(server, path="/")
        except InvalidStatus as exc:
            outcomes.append(exc.response.status_code)
        else:
            opened.append(ws)
            outcomes.append(101)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(3 * TIMEOUT)
    for ws in opened:
        ws.close()
    return outcomes


def test_two_servers_on_two_event_loops_share_one_broadcaster() -> None:
    """One Broadcaster, two servers each on its own loop and thread: a publish reaches both,
    and apublish works from either loop."""
    broadcaster = Broadcaster()
    first = LivePanelApp(broadcaster, auth=admin_only())
    second = LivePanelApp(broadcaster, auth=admin_only())
    with (
        run_server(first, "uvicorn-websockets-sansio") as one,
        run_server(second, "hypercorn") as two,
    ):
        with open_ws(one, path="/") as a, open_ws(two, path="/") as b:
            expect_welcome(a)
            expect_welcome(b)
            event = broadcaster.publish(killed(1))
            assert recv_json(a)["id"] == event.id
            assert recv_json(b)["id"] == event.id
            assert broadcaster.connection_count == 2


def test_testclient_without_with_two_sockets_and_one_post_both_receive() -> None:
    """FastAPI's testing pattern: TestClient(app) without a with block (a loop per
    connection), two WebSockets at once, one POST that publishes: both receive it."""
    broadcaster = Broadcaster()
    app = FastAPI()
    app.add_middleware(LivePanelMiddleware, path="/ws", broadcaster=broadcaster, auth=None)

    @app.post("/spawn")
    def spawn() -> dict[str, str]:
        event = broadcaster.publish(killed(7))
        return {"id": event.id or ""}

    client = TestClient(app)
    with client.websocket_connect("/ws") as one, client.websocket_connect("/ws") as two:
        assert one.receive_json()["type"] == "welcome"
        assert two.receive_json()["type"] == "welcome"
        answer = client.post("/spawn")
        assert answer.status_code == 200
        sent = answer.json()["id"]
        assert one.receive_json()["id"] == sent
        assert two.receive_json()["id"] == sent


class FailingSend:
    """A server whose send breaks for one connection (``?break``) with a non-OSError."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("query_string") != b"break":
            await self.app(scope, receive, send)
            return
        sent = 0

        async def breaking(message: Any) -> None:
            nonlocal sent
            if message["type"] == "websocket.send":
                sent += 1
                if sent > 1:  # the welcome passes, the first event does not
                    raise RuntimeError("the server refused the frame")
            await send(message)

        await self.app(scope, receive, breaking)


@each_server
def test_a_failing_send_ends_that_connection_with_1011_and_no_other(
    kind: str, server_logs: LogCapture
) -> None:
    """A send that raises something other than OSError closes that connection with 1011 and a
    log line; the broadcast and the other connection go on."""
    broadcaster = Broadcaster()
    app = FailingSend(LivePanelApp(broadcaster, auth=admin_only()))
    with run_server(app, kind) as server:
        failing_send(server, broadcaster)
    assert "writing to a connection failed (RuntimeError)" in server_logs.text()


def failing_send(server: Any, broadcaster: Broadcaster) -> None:
    with open_ws(server, "break", path="/") as bad, open_ws(server, path="/") as good:
        expect_welcome(bad)
        expect_welcome(good)
        first = broadcaster.publish(killed(1))
        with pytest.raises(ConnectionClosed) as closed:
            recv_json(bad)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1011
        second = broadcaster.publish(killed(2))
        assert recv_json(good)["id"] == first.id
        assert recv_json(good)["id"] == second.id
