"""Guessing a password through the endpoint, on real servers: after too many refusals from one
client address that address gets 429 before its credentials are read, for a while, whether
it guesses through WebSocket handshakes or the HTTP probe; other addresses are not affected.

The attacker connects from 127.0.0.2 (every 127.x address is loopback on Linux); the
servers report the socket's peer address in scope["client"].
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from livepanel import BasicAuth, Broadcaster, LivePanelApp
from tests.conftest import LogCapture
from tests.integration.helpers import (
    PASSWORD,
    TIMEOUT,
    USERNAME,
    Serve,
    assert_denied,
    basic,
    expect_welcome,
    open_ws,
    wait_until,
)
from tests.servers import RunningServer

ATTACKER = "127.0.0.2"
LEGITIMATE = "127.0.0.1"


def counting_auth(calls: list[str]) -> BasicAuth:
    """admin / s3:cret only; records every password it is asked to check."""

    def verify(username: str, password: str) -> bool:
        calls.append(password)
        return (username, password) == (USERNAME, PASSWORD)

    return BasicAuth(verify)


def bound_socket(server: RunningServer, source: str) -> socket.socket:
    """A TCP connection to ``server`` from the loopback address ``source``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.bind((source, 0))
    sock.connect((server.host, server.port))
    return sock


def handshake(
    server: RunningServer, password: str, source: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """Open a WebSocket from ``source``: (101, {}, b"") when accepted, else the refusal."""
    sock = bound_socket(server, source)
    auth = {"Authorization": basic(USERNAME, password), **headers}
    try:
        with open_ws(server, headers=auth, sock=sock) as ws:
            expect_welcome(ws)
            return 101, {}, b""
    except InvalidStatus as exc:
        response = exc.response
        return response.status_code, dict(response.headers), bytes(response.body or b"")
    finally:
        sock.close()


def probe(server: RunningServer, password: str, source: str) -> tuple[int, dict[str, str]]:
    """A plain HTTP GET of the endpoint from ``source``: its status and headers."""
    with bound_socket(server, source) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: " + f"{server.host}:{server.port}".encode() + b"\r\n"
            b"Authorization: " + basic(USERNAME, password).encode() + b"\r\n"
            b"Connection: close\r\n\r\n"
        )
        data = b""
        for _ in range(64):  # bounded: the response is small and the server closes
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
    return status, headers


def test_two_hundred_wrong_passwords_end_in_429_while_another_address_logs_in(
    serve: Serve, server_logs: LogCapture
) -> None:
    """With the defaults (20 refusals per 60 s, 60 s lockout) 200 guesses from one address get
    20 answers of 401 and then only 429, quickly; a login from another address works."""
    calls: list[str] = []
    server = serve(LivePanelApp(Broadcaster(), auth=counting_auth(calls)))
    started = time.monotonic()
    answers = [handshake(server, f"guess-{n}", ATTACKER) for n in range(200)]
    elapsed = time.monotonic() - started
    statuses = [status for status, _, _ in answers]
    assert statuses == [401] * 20 + [429] * 180
    assert elapsed < 30, f"200 handshakes took {elapsed:.1f} s"
    assert len(calls) == 20  # once locked out, no password is checked at all
    status, headers, body = answers[-1]
    assert_denied(status, headers, body, 429, "too_many_failures")
    assert 1 <= int(headers["retry-after"]) <= 60
    assert handshake(server, PASSWORD, LEGITIMATE)[0] == 101
    assert server_logs.errors() == []


def test_a_locked_out_address_learns_nothing_even_with_the_right_password(serve: Serve) -> None:
    """During the lockout the right password is answered 429 like any other, unchecked."""
    calls: list[str] = []
    server = serve(LivePanelApp(Broadcaster(), auth=counting_auth(calls), auth_failure_limit=5))
    assert [handshake(server, "wrong", ATTACKER)[0] for _ in range(5)] == [401] * 5
    assert handshake(server, PASSWORD, ATTACKER)[0] == 429
    assert PASSWORD not in calls


def test_guesses_through_the_http_probe_count_and_are_locked_out_too(serve: Serve) -> None:
    """The HTTP probe runs the same checks: its refusals count with the handshakes', and a
    locked-out address gets 429 with Retry-After there too."""
    calls: list[str] = []
    server = serve(LivePanelApp(Broadcaster(), auth=counting_auth(calls), auth_failure_limit=6))
    assert [probe(server, "wrong", ATTACKER)[0] for _ in range(3)] == [401] * 3
    assert [handshake(server, "wrong", ATTACKER)[0] for _ in range(3)] == [401] * 3
    status, headers = probe(server, PASSWORD, ATTACKER)
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert handshake(server, PASSWORD, ATTACKER)[0] == 429
    assert probe(server, PASSWORD, LEGITIMATE)[0] == 426  # everyone else passes
    assert len(calls) == 7


def test_the_lockout_ends_after_auth_lockout_seconds(serve: Serve) -> None:
    """When auth_lockout has passed the address is heard again."""
    app = LivePanelApp(
        Broadcaster(), auth=counting_auth([]), auth_failure_limit=3, auth_lockout=0.5
    )
    server = serve(app)
    for _ in range(3):
        handshake(server, "wrong", ATTACKER)
    assert handshake(server, PASSWORD, ATTACKER)[0] == 429
    wait_until(lambda: probe(server, PASSWORD, ATTACKER)[0] != 429, what="the lockout to end")
    assert handshake(server, PASSWORD, ATTACKER)[0] == 101


def test_none_turns_the_throttle_off(serve: Serve) -> None:
    """auth_failure_limit=None: every wrong guess is a 401, however many."""
    server = serve(LivePanelApp(Broadcaster(), auth=counting_auth([]), auth_failure_limit=None))
    assert {handshake(server, f"g{n}", ATTACKER)[0] for n in range(40)} == {401}
    assert handshake(server, PASSWORD, ATTACKER)[0] == 101


def test_a_lockout_is_logged_once_not_once_per_attempt(
    serve: Serve, server_logs: LogCapture
) -> None:
    """One warning names the address when its lockout begins; the 429s that follow log nothing,
    so a flood of guesses cannot flood the logs."""
    server = serve(LivePanelApp(Broadcaster(), auth=counting_auth([]), auth_failure_limit=5))
    for n in range(50):
        handshake(server, f"g{n}", ATTACKER)
    records = [r for r in server_logs.records if r.name == "livepanel"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert ATTACKER in warnings[0]
    assert "429" in warnings[0]
    refusals = [r for r in records if "refused" in r.getMessage() and r.levelno == logging.INFO]
    assert len(refusals) == 1  # the five 401s share one line per address and minute


@pytest.mark.parametrize(
    "server_kind", ["uvicorn-websockets", "uvicorn-wsproto"], indirect=True
)  # uvicorn applies proxy headers by default; hypercorn needs its middleware
@pytest.mark.parametrize("forwarded", ["203.0.113.7", "203.0.113.8"])
def test_behind_a_proxy_the_address_the_server_reports_is_throttled(
    serve: Serve, forwarded: str
) -> None:
    """uvicorn reports X-Forwarded-For from a trusted proxy (127.0.0.1 by default) as the
    client: each forwarded address has its own count, whatever socket carries it."""
    server = serve(LivePanelApp(Broadcaster(), auth=counting_auth([]), auth_failure_limit=3))
    for _ in range(3):
        handshake(server, "wrong", LEGITIMATE, **{"X-Forwarded-For": forwarded})
    assert handshake(server, "wrong", LEGITIMATE, **{"X-Forwarded-For": forwarded})[0] == 429
    other = "198.51.100.1"
    assert handshake(server, PASSWORD, LEGITIMATE, **{"X-Forwarded-For": other})[0] == 101
    assert handshake(server, PASSWORD, LEGITIMATE)[0] == 101  # the proxy itself is not locked


def test_the_denial_body_names_the_wait(serve: Serve) -> None:
    """The 429's JSON message tells how long to wait, as Retry-After does."""
    server = serve(LivePanelApp(Broadcaster(), auth=counting_auth([]), auth_failure_limit=1))
    handshake(server, "wrong", ATTACKER)
    status, headers, body = handshake(server, "wrong", ATTACKER)
    document: dict[str, Any] = json.loads(body)
    assert status == 429
    assert headers["retry-after"] in document["message"]
