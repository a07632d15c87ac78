"""Clients, frames and bounded waits shared by the integration tests."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from livepanel import BasicAuth, Broadcaster, Event
from tests.servers import RunningServer

USERNAME, PASSWORD = "admin", "s3:cret"
TIMEOUT = 5.0
Serve = Callable[[Any], RunningServer]
"""The ``serve`` fixture: ``serve(app)`` runs ``app`` on this test's server kind."""

TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


def basic(username: str, password: str) -> str:
    """An ``Authorization: Basic`` value."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


AUTH = {"Authorization": basic(USERNAME, PASSWORD)}


def admin_only() -> BasicAuth:
    """Accepts admin / s3:cret only (the password holds a colon on purpose)."""
    return BasicAuth(lambda u, p: (u, p) == (USERNAME, PASSWORD))


def open_ws(
    server: RunningServer,
    query: str = "",
    *,
    headers: Mapping[str, str] | None = AUTH,
    path: str = "/ws",
    **kwargs: Any,
) -> ClientConnection:
    """A websockets sync client on ``path?query`` with admin's credentials by default."""
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", 2)
    url = f"{server.ws_url}{path}{'?' + query if query else ''}"
    return connect(url, additional_headers=headers, proxy=None, **kwargs)


def refusal(server: RunningServer, query: str = "", **kwargs: Any) -> InvalidStatus:
    """Open a connection that must be refused with an HTTP status; return the refusal."""
    with pytest.raises(InvalidStatus) as info:
        open_ws(server, query, **kwargs).close()
    return info.value


def assert_denied(
    status: int, headers: Headers | Mapping[str, str], body: bytes, code: int, error: str
) -> None:
    """A denial of the contract: this status and a JSON body naming ``error``."""
    assert status == code
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["error"] == error
    assert isinstance(document["message"], str)
    assert document["message"]


def assert_refused(refused: InvalidStatus, status: int, error: str) -> None:
    """The WebSocket handshake got a real HTTP denial with the contract's JSON body."""
    response = refused.response
    assert_denied(
        response.status_code, response.headers, bytes(response.body or b""), status, error
    )


def recv_json(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next frame, decoded."""
    frame: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return frame


def expect_welcome(ws: ClientConnection) -> dict[str, Any]:
    """Check that the first frame is ``welcome``; return its payload."""
    frame = recv_json(ws)
    assert frame["type"] == "welcome", frame
    payload: dict[str, Any] = frame["payload"]
    return payload


def expect_frame(ws: ClientConnection, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next frame, which must be of type ``kind``."""
    frame = recv_json(ws, timeout)
    assert frame["type"] == kind, frame
    return frame


def expect_error(ws: ClientConnection, code: str) -> dict[str, Any]:
    """The next frame, which must be an ``error`` with ``code``."""
    frame = expect_frame(ws, "error")
    assert frame["payload"]["code"] == code, frame
    assert isinstance(frame["payload"]["message"], str)
    return frame


def recv_events(ws: ClientConnection, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """The next ``count`` frames, which must all be broadcast events."""
    frames = [recv_json(ws, timeout) for _ in range(count)]
    for frame in frames:
        assert "id" in frame, frame
    return frames


def recv_until(
    ws: ClientConnection, event_id: str, limit: int, timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    """Every frame up to and including the event ``event_id`` (at most ``limit`` frames)."""
    frames: list[dict[str, Any]] = []
    for _ in range(limit):
        frame = recv_json(ws, timeout)
        frames.append(frame)
        if frame.get("id") == event_id:
            return frames
    raise AssertionError(f"event {event_id} not among the first {limit} frames")


def close_code(ws: ClientConnection, limit: int = 100, timeout: float = TIMEOUT) -> int | None:
    """Read until the server closes; return the close code it sent (``None``: no close frame)."""
    for _ in range(limit):
        try:
            ws.recv(timeout=timeout)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
    raise AssertionError(f"the server did not close within {limit} frames")


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


def session_created(broadcaster: Broadcaster, n: int, agent: str = "a1") -> Event:
    """Publish ``session.created`` number ``n``."""
    return broadcaster.publish(
        "session.created", {"sessionKey": f"s{n}", "agentId": agent, "kind": "direct"}
    )


def agent_status(broadcaster: Broadcaster, n: int) -> Event:
    """Publish ``agent.status`` number ``n``."""
    return broadcaster.publish(
        "agent.status", {"agentId": f"a{n}", "status": "running", "activeSessionCount": n}
    )


def ids(frames: list[dict[str, Any]]) -> list[str]:
    """The ids of the broadcast events among ``frames``."""
    return [f["id"] for f in frames if "id" in f]


# ---------------------------------------------------------------------- raw sockets


def raw_upgrade(
    server: RunningServer, path: str = "/ws", extra: bytes = b"", auth: bool = True
) -> socket.socket:
    """Send a WebSocket upgrade request on a bare socket; the response is left unread."""
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    key = base64.b64encode(os.urandom(16))
    request = (
        b"GET " + path.encode() + b" HTTP/1.1\r\n"
        b"Host: " + f"{server.host}:{server.port}".encode() + b"\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
    )
    if auth:
        request += b"Authorization: " + AUTH["Authorization"].encode() + b"\r\n"
    sock.sendall(request + extra + b"\r\n")
    return sock


def read_head(sock: socket.socket) -> bytes:
    """Read an HTTP response's status line and headers (bounded)."""
    data = b""
    for _ in range(64):
        if b"\r\n\r\n" in data:
            break
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head = data.partition(b"\r\n\r\n")[0]
    assert head, "the server sent no response"
    return head


def abort(sock: socket.socket) -> None:
    """Drop the TCP connection with a reset, as a crashed client or a dead network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
