"""Attacks by clients that stop reading (issue: a non-reader keeps its slot and its queued
frames for ever) and by clients that ask for state frame after state frame (issue: state
frames cost nothing), on real servers: uvicorn (websockets and wsproto) and hypercorn,
WebSocket and Server-Sent Events."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from livepanel import Broadcaster, LivePanelApp
from tests.faults.helpers import OPENER, ServerProcess, server_processes
from tests.integration.helpers import (
    AUTH,
    TIMEOUT,
    Serve,
    admin_only,
    expect_welcome,
    open_ws,
    recv_json,
    wait_until,
)
from tests.servers import RunningServer

APP = "tests.security.nonreader_app:create_app"
KINDS = ("uvicorn-websockets-sansio", "uvicorn-wsproto", "hypercorn-0")
SESSIONS = 300  # with 4 kB labels: a state frame of about 1.2 MB


def post(server: ServerProcess, path: str) -> dict[str, Any]:
    """POST to the app's own routes."""
    url = f"http://127.0.0.1:{server.port}{path}"
    with OPENER.open(urllib.request.Request(url, method="POST"), timeout=TIMEOUT) as response:
        document: dict[str, Any] = json.load(response)
        return document


def numbers(server: ServerProcess) -> dict[str, Any]:
    """The app's /health: its RSS, its slots and the broadcaster's numbers."""
    document = server.health()
    assert document is not None, server.output()
    return document


def non_reader(server: ServerProcess, transport: str) -> socket.socket:
    """A client that asks for the state and then never reads: a small receive window, a
    WebSocket upgrade or an event-stream GET written by hand, nothing read back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", server.port))
    head = f"GET /ws?state=1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    head += f"Authorization: {AUTH['Authorization']}\r\n"
    if transport == "websocket":
        key = base64.b64encode(os.urandom(16)).decode()
        head += "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        head += f"Sec-WebSocket-Key: {key}\r\n"
    else:
        head += "Accept: text/event-stream\r\n"
    sock.sendall((head + "\r\n").encode())
    return sock


def accepted(server: ServerProcess, transport: str) -> bool:
    """Whether the same user's next handshake is accepted now (a 429 is not)."""
    url = f"127.0.0.1:{server.port}/ws"
    if transport == "websocket":
        try:
            with connect(f"ws://{url}", additional_headers=AUTH, proxy=None, open_timeout=2) as ws:
                return bool(json.loads(ws.recv(timeout=TIMEOUT))["type"] == "welcome")
        except InvalidStatus as refused:
            status = refused.response.status_code
        assert status == 429, status
        return False
    headers = {**AUTH, "Accept": "text/event-stream"}
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
        with client.stream("GET", f"http://{url}", headers=headers) as response:
            assert response.status_code in (200, 429), response.status_code
            return response.status_code == 200


@pytest.fixture(params=KINDS)
def app_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """The non-reader app in a server process of this kind, its state already 1.2 MB."""
    with server_processes([str(request.param)], tmp_path, app=APP) as (server,):
        post(server, f"/publish?kind=sessions&n={SESSIONS}")
        yield server


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_attack_a_non_reader_gives_its_slot_and_memory_back_within_seconds(
    app_server: ServerProcess, transport: str
) -> None:
    """max_connections_per_user=1: a client asks for the 1.2 MB state and never reads; it is
    closed as a slow consumer and the same user's next handshake is accepted within 5 s,
    while the non-reader still holds its socket; the slots held equal the connections counted,
    and the server's RSS is back within 10 % of what it was before."""
    server = app_server
    for _ in range(2):  # warm up: the state encoded and sent once, the code paths run
        assert accepted(server, transport)
    wait_until(lambda: numbers(server)["slots"] == 0, what="the warm-up to end")
    before = numbers(server)["rss"]
    attacker = non_reader(server, transport)
    try:
        wait_until(lambda: numbers(server)["connections"] == 1, what="the non-reader to connect")
        # 8 events a request, fewer than the queue holds: it fills only once the writer is
        # stuck in the server's send (bounded: 16 MB, far beyond the socket buffers)
        for _ in range(500):
            post(server, "/publish?kind=sessions&n=8")
            if numbers(server)["slow_disconnects"]:
                break
        assert numbers(server)["slow_disconnects"] == 1
        closed_at = time.monotonic()
        while not accepted(server, transport):
            assert time.monotonic() - closed_at < 5.0, "the non-reader still holds its slot"
            time.sleep(0.2)
        wait_until(lambda: numbers(server)["slots"] == 0, what="the slots to be given back")
        assert numbers(server)["connections"] == 0
        wait_until(
            lambda: numbers(server)["leftovers"] == 0,
            timeout=10,
            what="livepanel's connection objects freed (without the cycle collector)",
        )
        assert numbers(server)["cyclic"] == 0, "a closed connection sat in a reference cycle"
        wait_until(
            lambda: numbers(server)["rss"] <= before * 1.10,
            timeout=10,
            what=f"RSS back within 10 % of {before} (now {numbers(server)['rss']})",
        )
    finally:
        attacker.close()


# ---------------------------------------------------------------------- state frames


def sessions_state(broadcaster: Broadcaster) -> None:
    """300 sessions with 4 kB labels: a state frame of about 1.2 MB."""
    import livepanel.events.builtin  # noqa: F401 - the sessions collection

    for i in range(SESSIONS):
        payload = {"sessionKey": f"s{i}", "agentId": "a", "kind": "direct", "label": "x" * 4000}
        broadcaster.publish("session.created", payload)


ASK_STATE = json.dumps({"type": "subscribe", "payload": {"types": ["*"], "state": True}})


def test_attack_asking_for_the_state_20_times_a_second_is_charged_then_closed(
    serve: Serve,
) -> None:
    """A client that reads everything and asks for the 1.2 MB state 20 times a second for
    2 s gets at most two state frames, is told rate_limited, then closed with 1008."""
    broadcaster = Broadcaster()
    sessions_state(broadcaster)
    server: RunningServer = serve(LivePanelApp(broadcaster, auth=admin_only()))
    states, errors, code = 0, [], None
    with open_ws(server, max_size=None) as ws:
        expect_welcome(ws)
        began = time.monotonic()
        for n in range(40):
            try:
                ws.send(ASK_STATE)
                while True:  # read what came meanwhile, without waiting for more
                    frame = recv_json(ws, timeout=0.01)
                    states += frame["type"] == "state"
                    if frame["type"] == "error":
                        errors.append(frame["payload"]["code"])
            except TimeoutError:
                pass
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                break
            time.sleep(max(0.0, began + (n + 1) / 20 - time.monotonic()))
    assert states <= 2, f"{states} state frames of 1.2 MB in 2 s"
    assert "rate_limited" in errors
    assert code == 1008


def test_attack_a_non_reader_asking_for_the_state_again_and_again_holds_one(
    serve: Serve,
) -> None:
    """A client that never reads asks 30 times for the 1.2 MB state: one is queued for it, it
    is told rate_limited and closed with 1008, never by filling its 16 MB byte bound."""
    from tests.integration.test_slow_consumer import stalled_reader

    broadcaster = Broadcaster()
    sessions_state(broadcaster)
    server: RunningServer = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with stalled_reader(server) as attacker:
        for _ in range(30):
            try:
                attacker.send(ASK_STATE)
            except ConnectionClosed:  # closed for asking again: that is the point
                break
        wait_until(lambda: broadcaster.connection_count == 0, what="the asker to be closed")
    assert broadcaster.stats()["slow_disconnects"] == 0
