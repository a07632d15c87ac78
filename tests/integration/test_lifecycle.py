"""Connections come and go, cleanly or not, and leave nothing behind."""

from __future__ import annotations

import json
import logging
import threading
from contextlib import ExitStack

from livepanel import Broadcaster, LivePanelApp
from tests.conftest import LogCapture
from tests.integration.helpers import (
    Serve,
    abort,
    admin_only,
    close_code,
    expect_frame,
    expect_welcome,
    ids,
    open_ws,
    raw_upgrade,
    read_head,
    recv_events,
    recv_json,
    session_created,
    wait_until,
)
from tests.servers import RunningServer, run_server

CYCLES = 300


def _released(app: LivePanelApp, broadcaster: Broadcaster) -> bool:
    return app.connection_count == 0 and broadcaster.connection_count == 0


def _cycle(server: RunningServer, n: int) -> None:
    """Connection ``n``: closed cleanly, reset after welcome, or reset mid-handshake."""
    if n % 3 == 0:
        with open_ws(server) as ws:
            expect_welcome(ws)
    elif n % 3 == 1:
        sock = raw_upgrade(server)
        assert read_head(sock).startswith(b"HTTP/1.1 101")
        abort(sock)
    else:
        abort(raw_upgrade(server))


def test_connect_disconnect_cycles_leave_no_connection_behind(
    serve: Serve, server_logs: LogCapture
) -> None:
    """300 connections, closed cleanly or reset, leave both connection counts at 0."""
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=admin_only())
    server = serve(app)
    for n in range(CYCLES):
        _cycle(server, n)
    wait_until(lambda: _released(app, broadcaster), what="every connection to be released")
    assert broadcaster.stats()["subscribers"] == 0
    assert server_logs.errors() == []


def test_cycles_while_events_flow_do_not_disturb_a_steady_client(
    serve: Serve, server_logs: LogCapture
) -> None:
    """Clients resetting mid-broadcast cost a steady client nothing: it gets every event."""
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=admin_only())
    server = serve(app)
    published: list[str] = []
    with open_ws(server) as steady:
        expect_welcome(steady)
        for n in range(60):
            _cycle(server, n)
            published.append(session_created(broadcaster, n).id or "")
        assert ids(recv_events(steady, len(published))) == published
    wait_until(lambda: _released(app, broadcaster), what="every connection to be released")
    assert server_logs.errors() == []


def test_clean_close_releases_the_connection(serve: Serve, server_logs: LogCapture) -> None:
    """A client closing normally is counted while open and released right after."""
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=admin_only())
    server = serve(app)
    with open_ws(server) as ws:
        expect_welcome(ws)
        assert app.connection_count == 1
        assert broadcaster.connection_count == 1
        assert broadcaster.stats()["connections"] == 1
    wait_until(lambda: _released(app, broadcaster), what="the connection to be released")
    assert server_logs.errors() == []


def test_reset_while_the_server_is_sending_releases_the_connection(
    serve: Serve, server_logs: LogCapture
) -> None:
    """A client reset while its queue is being written is released without an error."""
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=admin_only())
    server = serve(app)
    sock = raw_upgrade(server)
    assert read_head(sock).startswith(b"HTTP/1.1 101")
    wait_until(lambda: broadcaster.connection_count == 1)
    for n in range(200):
        broadcaster.publish(
            "cron.executed",
            {
                "jobId": f"j{n}",
                "command": "c",
                "exitCode": 0,
                "durationMs": 1,
                "stdout": "y" * 4000,
            },
        )
    abort(sock)
    wait_until(lambda: _released(app, broadcaster), what="the connection to be released")
    assert server_logs.errors() == []


def test_server_keeps_serving_after_the_cycles(serve: Serve) -> None:
    """After many resets a new client still connects, pings, and receives events."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    for n in range(30):
        _cycle(server, n)
    with open_ws(server) as ws:
        expect_welcome(ws)
        ws.send(json.dumps({"type": "ping"}))
        expect_frame(ws, "pong")
        event = session_created(broadcaster, 1)
        assert recv_json(ws)["id"] == event.id


def test_server_shutdown_closes_and_releases_open_connections(
    server_kind: str, server_logs: LogCapture
) -> None:
    """Stopping the server (lifespan on) closes open clients and releases their slots."""
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=admin_only())
    with ExitStack() as clients:
        with run_server(app, server_kind, lifespan=True) as server:
            ws = clients.enter_context(open_ws(server))
            expect_welcome(ws)
        assert f"{server_kind}:{server.port}" not in [t.name for t in threading.enumerate()]
        assert close_code(ws) in (1001, 1011, 1012)  # going away, or the server's own close
    assert _released(app, broadcaster)
    livepanel_errors = [
        r.getMessage()
        for r in server_logs.records
        if r.name == "livepanel" and r.levelno >= logging.ERROR
    ]
    assert livepanel_errors == []
