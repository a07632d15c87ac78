"""Locking people out and out-guessing the throttle, as an attacker would, on real servers.

A web page anyone visits sends credential-less no-cors requests to the endpoint, hoping each
counts as a failed login for the visitor's address; a script sends 200 guesses at once so
that all are checked before the first refusal is counted; a botnet spreads its guesses for
one user name over many addresses; a flood of fresh addresses tries to push a lockout out of
the throttle's memory. The attacker connects from 127.0.0.2 (every 127.x address is loopback
on Linux) and its victim from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from typing import Any

from livepanel import BasicAuth, Broadcaster, LivePanelApp
from livepanel.throttle import AuthThrottle
from tests.conftest import LogCapture
from tests.integration.helpers import (
    PASSWORD,
    TIMEOUT,
    USERNAME,
    Serve,
    basic,
    expect_welcome,
    open_ws,
    refusal,
    wait_until,
)
from tests.security.test_brute_force import ATTACKER, LEGITIMATE, counting_auth, handshake
from tests.servers import RunningServer


def request(
    server: RunningServer, source: str, headers: dict[str, str], *, upgrade: bool = False
) -> int:
    """One GET of the endpoint from ``source`` with exactly ``headers``: the status."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((source, 0))
        sock.connect((server.host, server.port))
        sock.sendall(_request_bytes(server, headers, upgrade=upgrade))
        return _status(sock)


def _request_bytes(server: RunningServer, headers: dict[str, str], *, upgrade: bool) -> bytes:
    lines = ["GET /ws HTTP/1.1", f"Host: {server.host}:{server.port}"]
    if upgrade:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
    else:
        lines.append("Connection: close")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _status(sock: socket.socket) -> int:
    data = b""
    for _ in range(64):  # bounded: a status line is short
        if b"\r\n" in data:
            break
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


# a browser's fetch(url, {mode: "no-cors", credentials: "include"}) from another site
NO_CORS = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "empty"}


def test_attack_no_cors_probes_from_any_page_cannot_lock_the_visitor_out(serve: Serve) -> None:
    """25 no-cors requests from a cross-site page (403, before the throttle) and 25 requests
    without credentials from an older browser (401, not counted) leave the visitor's
    address free: the right password then gets 101."""
    calls: list[str] = []
    server = serve(LivePanelApp(Broadcaster(), auth=counting_auth(calls)))
    assert {request(server, LEGITIMATE, NO_CORS) for _ in range(25)} == {403}
    navigate = {**NO_CORS, "Sec-Fetch-Mode": "navigate"}
    assert request(server, LEGITIMATE, navigate) == 403
    assert {request(server, LEGITIMATE, {}) for _ in range(25)} == {401}
    assert {request(server, LEGITIMATE, {}, upgrade=True) for _ in range(5)} == {401}
    assert calls == []  # no password was ever checked
    assert handshake(server, PASSWORD, LEGITIMATE)[0] == 101


def test_attack_a_cross_site_no_cors_request_is_refused_even_with_credentials(
    serve: Serve,
) -> None:
    """Cached Basic credentials on a cross-site no-cors request do not get it past the 403;
    a cross-site WebSocket handshake is left to the origin policy."""
    server = serve(LivePanelApp(Broadcaster(), auth=counting_auth([])))
    auth = {"Authorization": basic(USERNAME, PASSWORD)}
    assert request(server, LEGITIMATE, {**NO_CORS, **auth}) == 403
    cross_site_ws = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "websocket"}
    status = request(server, LEGITIMATE, {**cross_site_ws, **auth}, upgrade=True)
    assert status == 101  # no Origin here: not a browser, so the origin policy lets it pass
    evil = {**cross_site_ws, **auth, "Origin": "https://evil.example"}
    assert request(server, LEGITIMATE, evil, upgrade=True) == 403


def test_attack_two_hundred_simultaneous_guesses_against_a_slow_verifier(serve: Serve) -> None:
    """200 wrong guesses sent at once, against an async verifier that takes 20 ms (a database
    lookup): guesses in flight count, so at most 40 (here: the limit, 20) are checked and the
    rest are answered 429; another address still logs in."""
    checked: list[str] = []

    async def verify(username: str, password: str) -> bool:
        checked.append(password)
        await asyncio.sleep(0.02)
        return (username, password) == (USERNAME, PASSWORD)

    server = serve(LivePanelApp(Broadcaster(), auth=BasicAuth(verify)))
    sockets = []
    try:
        for _ in range(200):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(TIMEOUT * 2)
            sock.bind((ATTACKER, 0))
            sock.connect((server.host, server.port))
            sockets.append(sock)
        payloads = [
            _request_bytes(server, {"Authorization": basic(USERNAME, f"g{n}")}, upgrade=True)
            for n in range(200)
        ]
        # every request goes out before any answer comes back
        for sock, payload in zip(sockets, payloads, strict=True):
            sock.sendall(payload)
        statuses = [_status(sock) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    print(f"{len(checked)} of 200 simultaneous guesses checked")
    assert len(checked) <= 40, f"{len(checked)} guesses checked"
    assert set(statuses) == {401, 429}
    assert statuses.count(401) == len(checked)
    assert handshake(server, "wrong", ATTACKER)[0] == 429
    assert handshake(server, PASSWORD, LEGITIMATE)[0] == 101


def test_attack_guesses_for_one_user_spread_over_many_addresses(serve: Serve) -> None:
    """With a per-user-name budget of 5, five addresses guessing admin once each lock the name:
    those addresses may not try it again (not even with the right password), while an address
    that has not failed (the real admin) still logs in."""
    app = LivePanelApp(Broadcaster(), auth=counting_auth([]))
    app.auth_throttle = AuthThrottle(limit=20, user_limit=5)
    server = serve(app)
    botnet = [f"127.0.0.{n}" for n in range(10, 15)]
    assert [handshake(server, "guess", source)[0] for source in botnet] == [401] * 5
    assert {handshake(server, PASSWORD, source)[0] for source in botnet} == {429}
    assert handshake(server, PASSWORD, "127.0.0.20")[0] == 101
    assert handshake(server, PASSWORD, LEGITIMATE)[0] == 101


def test_attack_ten_thousand_fresh_addresses_cannot_lift_a_lockout() -> None:
    """An attacker locked out fails once from each of 10,001 more addresses (IPv6 gives it
    plenty) to push its own record out of the throttle's memory: unlocked records are
    forgotten first, so its lockout holds."""
    throttle = AuthThrottle(limit=3)
    for _ in range(3):
        throttle.failed(ATTACKER, USERNAME)
    assert throttle.retry_after(ATTACKER) is not None
    for n in range(10_001):
        throttle.failed(f"2001:db8:{n:x}::/64")
    assert len(throttle) == 10_000
    assert throttle.retry_after(ATTACKER) is not None


def test_attack_a_prober_cannot_fill_the_logs(serve: Serve, server_logs: LogCapture) -> None:
    """100 refused requests from one address (401 and 403, handshakes and probes) log one line
    for that address within the minute; another address gets its own line."""
    server = serve(LivePanelApp(Broadcaster(), auth=counting_auth([]), auth_failure_limit=None))
    for n in range(50):
        request(server, ATTACKER, {"Authorization": basic(USERNAME, f"g{n}")})
        request(server, ATTACKER, {"Origin": "https://evil.example"}, upgrade=True)
    request(server, LEGITIMATE, {})
    wait_until(lambda: len(refusal_lines(server_logs)) >= 2, what="the refusal lines")
    lines = refusal_lines(server_logs)
    assert len(lines) == 2, lines
    assert sum(ATTACKER in line for line in lines) == 1


def refusal_lines(logs: LogCapture) -> list[str]:
    return [
        r.getMessage()
        for r in logs.records
        if r.name == "livepanel" and r.getMessage().startswith("livepanel: refused")
    ]


def test_attack_an_authenticator_exception_does_not_log_the_attackers_input(
    serve: Serve, server_logs: LogCapture
) -> None:
    """An authenticator that raises with the client's user name in its message: the log names
    the exception's type only, without message or traceback, and the request gets 401."""
    marker = "attacker-chosen-name\nINFO livepanel: accepted admin"

    async def fragile(scope: Any) -> Any:
        raise KeyError(marker)

    server = serve(LivePanelApp(Broadcaster(), auth=fragile))
    assert request(server, ATTACKER, {"Authorization": basic(marker[:20], "x")}) == 401
    wait_until(lambda: any("KeyError" in e for e in server_logs.errors()), what="the error line")
    records = [r for r in server_logs.records if r.name == "livepanel"]
    assert all(r.exc_info is None for r in records)
    assert not any("attacker-chosen" in r.getMessage() for r in records)


def test_attack_require_tls_refuses_a_plain_http_page_on_the_same_host(
    serve_tls: Serve, client_tls: Any
) -> None:
    """With require_tls, same-origin needs an https page: an http:// page on the same host and
    port (a plain-http site, or an injected one) gets 403; the https page connects."""
    server = serve_tls(LivePanelApp(Broadcaster(), auth=counting_auth([]), require_tls=True))
    host = f"{server.host}:{server.port}"
    refused = refusal(server, ssl=client_tls, origin=f"http://{host}")
    assert refused.response.status_code == 403
    with open_ws(server, ssl=client_tls, origin=f"https://{host}") as ws:
        expect_welcome(ws)
