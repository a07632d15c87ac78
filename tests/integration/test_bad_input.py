"""Bad client input: errors that keep the connection open, and the closes 1009 and 1008."""

from __future__ import annotations

import json

import pytest

from livepanel import Broadcaster, LivePanelApp
from tests.conftest import LogCapture
from tests.integration.helpers import (
    Serve,
    admin_only,
    close_code,
    expect_error,
    expect_frame,
    expect_welcome,
    open_ws,
    recv_json,
    session_created,
    wait_until,
)


def _ping_of_size(size: int) -> str:
    """A valid ping message of exactly ``size`` UTF-8 bytes."""
    base = json.dumps({"type": "ping", "payload": {"pad": ""}})
    return base.replace('""', '"' + "x" * (size - len(base)) + '"')


def test_frame_over_max_message_size_closes_with_1009(
    serve: Serve, server_logs: LogCapture
) -> None:
    """A client frame over max_message_size bytes closes the connection with 1009."""
    app = LivePanelApp(Broadcaster(), auth=admin_only(), max_message_size=1024)
    server = serve(app)
    with open_ws(server) as ws:
        expect_welcome(ws)
        ws.send(_ping_of_size(1025))
        assert close_code(ws) == 1009
    wait_until(lambda: app.connection_count == 0)
    assert server_logs.errors() == []


def test_frame_of_exactly_max_message_size_is_accepted(serve: Serve) -> None:
    """A frame of exactly max_message_size bytes is still handled."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), max_message_size=1024))
    with open_ws(server) as ws:
        expect_welcome(ws)
        message = _ping_of_size(1024)
        assert len(message.encode()) == 1024
        ws.send(message)
        assert expect_frame(ws, "pong")["payload"] == json.loads(message)["payload"]


def test_max_message_size_counts_utf8_bytes_not_characters(
    serve: Serve, server_logs: LogCapture
) -> None:
    """400 three-byte characters (1,200 bytes) exceed max_message_size=1024: close 1009."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), max_message_size=1024))
    with open_ws(server) as ws:
        expect_welcome(ws)
        ws.send(json.dumps({"type": "ping", "payload": {"s": "€" * 400}}, ensure_ascii=False))
        assert close_code(ws) == 1009
    assert server_logs.errors() == []


def test_oversized_binary_frame_closes_with_1009(serve: Serve, server_logs: LogCapture) -> None:
    """A binary frame over max_message_size closes with 1009 too."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), max_message_size=1024))
    with open_ws(server) as ws:
        expect_welcome(ws)
        ws.send(b"\x00" * 2048)
        assert close_code(ws) == 1009
    assert server_logs.errors() == []


def test_invalid_json_gets_an_error_and_the_connection_stays_open(serve: Serve) -> None:
    """Invalid JSON gets error invalid_json; pings and events still work afterwards."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        for text in ("{not json", "", '{"type": "ping"', "[1, 2,]", "NaNx"):
            ws.send(text)
            expect_error(ws, "invalid_json")
        ws.send(json.dumps({"type": "ping", "payload": {"still": "open"}}))
        assert expect_frame(ws, "pong")["payload"] == {"still": "open"}
        event = session_created(broadcaster, 1)
        assert recv_json(ws)["id"] == event.id


def test_unknown_type_gets_unknown_type(serve: Serve) -> None:
    """A well-formed message of an unknown type gets error unknown_type and nothing else."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        ws.send(json.dumps({"type": "session.created", "payload": {}}))
        expect_error(ws, "unknown_type")
        ws.send(json.dumps({"type": "x" * 500}))
        assert len(expect_error(ws, "unknown_type")["payload"]["message"]) < 200
        ws.send(json.dumps({"type": "ping"}))
        expect_frame(ws, "pong")


@pytest.mark.parametrize(
    "message",
    [
        [1, 2],
        "ping",
        42,
        None,
        {"payload": {}},
        {"type": 5},
        {"type": "ping", "payload": [1]},
        {"type": "ping", "timestamp": {"at": "noon"}},
        {"type": "subscribe", "payload": {"types": "session.*"}},
        {"type": "subscribe", "payload": {"types": ["session created!"]}},
        {"type": "subscribe", "payload": {"types": ["*"] * 100}},
        {"type": "ack", "payload": {}},
        {"type": "ack", "payload": {"id": 12}},
    ],
    ids=[
        "array",
        "string",
        "number",
        "null",
        "no-type",
        "type-not-string",
        "payload-not-object",
        "timestamp-not-string",
        "types-not-list",
        "bad-glob",
        "too-many-globs",
        "ack-without-id",
        "ack-id-not-string",
    ],
)
def test_wrong_shape_gets_invalid_message(serve: Serve, message: object) -> None:
    """JSON of the wrong shape gets error invalid_message; the connection stays open."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        ws.send(json.dumps(message))
        expect_error(ws, "invalid_message")
        ws.send(json.dumps({"type": "ping"}))
        expect_frame(ws, "pong")


def test_binary_frame_gets_invalid_message(serve: Serve) -> None:
    """livepanel speaks JSON text frames: a small binary frame gets invalid_message."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        ws.send(json.dumps({"type": "ping"}).encode())
        expect_error(ws, "invalid_message")
        ws.send(json.dumps({"type": "ping"}))
        expect_frame(ws, "pong")


def test_flood_gets_rate_limited_then_close_1008(serve: Serve, server_logs: LogCapture) -> None:
    """Beyond client_burst the client gets rate_limited; if it keeps sending, close 1008."""
    app = LivePanelApp(Broadcaster(), auth=admin_only(), client_rate=0.5, client_burst=5)
    server = serve(app)
    with open_ws(server) as ws:
        expect_welcome(ws)
        for n in range(7):  # 5 within the burst, 1 warned, 1 closing
            ws.send(json.dumps({"type": "ping", "payload": {"n": n}}))
        for n in range(5):
            assert expect_frame(ws, "pong")["payload"] == {"n": n}
        expect_error(ws, "rate_limited")
        assert close_code(ws) == 1008
    wait_until(lambda: app.connection_count == 0)
    assert server_logs.errors() == []


def test_rate_limit_is_per_connection(serve: Serve) -> None:
    """One client flooding into its limit does not limit another client."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), client_rate=0.5, client_burst=3))
    with open_ws(server) as flooder, open_ws(server) as calm:
        expect_welcome(flooder)
        expect_welcome(calm)
        for _ in range(4):
            flooder.send(json.dumps({"type": "ping"}))
        for _ in range(3):
            expect_frame(flooder, "pong")
        expect_error(flooder, "rate_limited")
        for n in range(3):
            calm.send(json.dumps({"type": "ping", "payload": {"n": n}}))
            assert expect_frame(calm, "pong")["payload"] == {"n": n}
