"""The limits on what one client may ask for, end to end on real servers: how many type globs
and how long, which characters, and how big a frame with the default settings.

(Rate, frame size, since, max_connections and the slow-reader close have their own
end-to-end tests in tests/integration; docs/security.md lists them all.)
"""

from __future__ import annotations

import json

from livepanel import Broadcaster, LivePanelApp
from livepanel.protocol import MAX_GLOB_LENGTH, MAX_GLOBS
from tests.conftest import LogCapture
from tests.integration.helpers import (
    Serve,
    admin_only,
    agent_status,
    close_code,
    expect_error,
    expect_welcome,
    open_ws,
    recv_json,
    session_created,
    wait_until,
)


def subscribe(types: list[str]) -> str:
    return json.dumps({"type": "subscribe", "payload": {"types": types}})


def test_more_globs_than_the_limit_are_an_invalid_message_and_the_filter_stays(
    serve: Serve,
) -> None:
    """A subscribe with MAX_GLOBS + 1 globs is answered invalid_message; the old filter holds."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, "types=session.*") as ws:
        expect_welcome(ws)
        ws.send(subscribe([f"type{n}.*" for n in range(MAX_GLOBS + 1)]))
        assert "at most" in expect_error(ws, "invalid_message")["payload"]["message"]
        agent_status(broadcaster, 1)
        event = session_created(broadcaster, 2)
        assert recv_json(ws)["id"] == event.id  # still session.* only


def test_the_most_and_longest_globs_allowed_are_accepted(serve: Serve) -> None:
    """MAX_GLOBS globs of MAX_GLOB_LENGTH characters replace the filter without a reply."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    globs = [f"{n:02d}" + "?" * (MAX_GLOB_LENGTH - 3) + "*" for n in range(MAX_GLOBS - 1)]
    with open_ws(server) as ws:
        expect_welcome(ws)
        ws.send(subscribe([*globs, "agent.*"]))
        ws.send(json.dumps({"type": "ping"}))  # answered once the subscribe is in force
        assert recv_json(ws)["type"] == "pong"
        session_created(broadcaster, 1)
        event = agent_status(broadcaster, 2)
        assert recv_json(ws)["id"] == event.id


def test_a_glob_longer_than_the_limit_is_an_invalid_message(serve: Serve) -> None:
    """One glob of MAX_GLOB_LENGTH + 1 characters refuses the whole subscribe."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        ws.send(subscribe(["a" * (MAX_GLOB_LENGTH + 1)]))
        expect_error(ws, "invalid_message")


def test_globs_with_other_characters_are_an_invalid_message(serve: Serve) -> None:
    """Brackets, spaces, control characters or an empty glob are refused, not compiled."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        for bad in (["[a-z]*"], ["session created"], ["session.*\n"], [""], ["(.*)+"]):
            ws.send(subscribe(bad))
            expect_error(ws, "invalid_message")


def test_too_many_globs_in_the_url_are_reported_after_welcome(serve: Serve) -> None:
    """?types= with MAX_GLOBS + 1 globs: welcome, invalid_message, and every event after."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    types = ",".join(f"t{n}" for n in range(MAX_GLOBS + 1))
    with open_ws(server, f"types={types}") as ws:
        expect_welcome(ws)
        expect_error(ws, "invalid_message")
        event = session_created(broadcaster, 1)
        assert recv_json(ws)["id"] == event.id


def test_a_huge_frame_closes_with_1009_under_the_default_limit(
    serve: Serve, server_logs: LogCapture
) -> None:
    """With the default max_message_size (64 KiB) a 1 MiB frame closes the connection, 1009."""
    app = LivePanelApp(Broadcaster(), auth=admin_only())
    server = serve(app)
    with open_ws(server, max_size=None) as ws:
        expect_welcome(ws)
        ws.send(json.dumps({"type": "ping", "payload": {"pad": "x" * (1 << 20)}}))
        assert close_code(ws) == 1009
    wait_until(lambda: app.connection_count == 0)
    assert server_logs.errors() == []
