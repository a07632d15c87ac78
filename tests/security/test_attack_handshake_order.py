"""A hostile handshake against each check in turn: the first failing check answers, and
nothing after it runs, on every transport, behind a host middleware wrapping everything.

The endpoint is mounted as the Quickstart mounts it (``LivePanelMiddleware`` around the
host app) and wrapped in uvicorn's ``ProxyHeadersMiddleware``, as behind a TLS-ending
proxy: ``X-Forwarded-Proto: https`` is what makes a plain connection count as TLS.
Each request fails every check from one point on (SPEC section 2: TLS, origin,
authentication, authorization, limits) and must get the status of the first of them,
without the authenticator or ``authorize`` running when an earlier check failed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from websockets.exceptions import InvalidStatus

from livepanel import BasicAuth, Broadcaster, LivePanelMiddleware
from tests.integration.helpers import (
    TIMEOUT,
    Serve,
    basic,
    expect_welcome,
    open_ws,
    wait_until,
)
from tests.servers import RunningServer

PAGE = "https://panel.example.com"
USERS = {"admin": "s3:cret", "viewer": "v1ew"}
STEPS = [
    # (what the request gets right, then the status and code of the first check it fails)
    ({}, 403, "tls_required"),
    ({"tls"}, 403, "origin_not_allowed"),
    ({"tls", "origin"}, 401, "unauthorized"),
    ({"tls", "origin", "login"}, 403, "forbidden"),
    ({"tls", "origin", "login", "allowed"}, 429, "too_many_connections"),
]


class Calls:
    """How many times the authenticator and ``authorize`` ran."""

    def __init__(self) -> None:
        self.auth = 0
        self.authorize = 0


def hostile_headers(right: set[str]) -> dict[str, str]:
    """Headers failing every check not in ``right`` (an admin login is right and allowed;
    a viewer's is right but not allowed; a wrong password is not right)."""
    headers = {"Origin": PAGE if "origin" in right else "https://evil.example"}
    if "tls" in right:
        headers["X-Forwarded-Proto"] = "https"
    if "allowed" in right:
        headers["Authorization"] = basic("admin", USERS["admin"])
    elif "login" in right:
        headers["Authorization"] = basic("viewer", USERS["viewer"])
    else:
        headers["Authorization"] = basic("viewer", "wrong")
    return headers


@contextlib.contextmanager
def guarded(serve: Serve) -> Iterator[tuple[RunningServer, Calls, LivePanelMiddleware]]:
    """The endpoint with every check armed, one connection slot, held by the admin."""
    calls = Calls()
    basic_auth = BasicAuth(lambda user, password: USERS.get(user) == password and user)

    async def counted_auth(scope: Any) -> Any:
        calls.auth += 1
        return await basic_auth(scope)

    def authorize(principal: Any, scope: Any) -> bool:
        calls.authorize += 1
        return bool(principal != "viewer")

    async def host(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError(f"the host app got {scope['type']} {scope.get('path')}")

    middleware = LivePanelMiddleware(
        host,
        path="/ws",
        broadcaster=Broadcaster(),
        auth=counted_auth,
        allowed_origins=[PAGE],
        authorize=authorize,
        require_tls=True,
        max_connections=1,
    )
    server = serve(ProxyHeadersMiddleware(middleware, trusted_hosts="*"))
    admin = hostile_headers({"tls", "origin", "allowed"})
    with open_ws(server, headers=admin) as held:
        expect_welcome(held)
        calls.auth = calls.authorize = 0
        yield server, calls, middleware


def ask(server: RunningServer, transport: str, headers: dict[str, str]) -> tuple[int, str]:
    """One request on ``transport``; the status it got and the error code of its body."""
    if transport == "websocket":
        try:
            open_ws(server, headers=headers).close()
        except InvalidStatus as refused:
            body = bytes(refused.response.body or b"")
            return refused.response.status_code, json.loads(body)["error"]
        return 101, ""
    accept = {"Accept": "text/event-stream"} if transport == "event stream" else {}
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
        response = client.get(f"{server.http_url}/ws", headers={**headers, **accept})
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize("transport", ["websocket", "event stream", "probe"])
def test_attack_a_request_failing_several_checks_gets_the_first_ones_answer(
    serve: Serve, transport: str
) -> None:
    """Each request fails every check from one on: it gets the first one's status and code,
    and the authenticator and authorize() never run for a request an earlier check refused."""
    with guarded(serve) as (server, calls, middleware):
        for right, status, code in STEPS:
            before = (calls.auth, calls.authorize)
            assert ask(server, transport, hostile_headers(right)) == (status, code), right
            ran_auth = calls.auth - before[0]
            ran_authorize = calls.authorize - before[1]
            assert ran_auth == (1 if "origin" in right else 0), (right, "auth")
            assert ran_authorize == (1 if "login" in right else 0), (right, "authorize")
        assert middleware.endpoint.connection_count == 1  # the admin's, nobody else's
        if transport != "probe":  # a probe is not a handshake
            assert middleware.endpoint.handshakes == {101: 1, 403: 3, 401: 1, 429: 1}


def test_attack_the_slot_is_free_again_once_the_holder_leaves(serve: Serve) -> None:
    """After the hostile steps, the one slot is still the admin's alone: once it leaves,
    the same request that got 429 is accepted."""
    with guarded(serve) as (server, _, middleware):
        admin = hostile_headers({"tls", "origin", "allowed"})
        assert ask(server, "websocket", admin) == (429, "too_many_connections")
    wait_until(lambda: middleware.endpoint.connection_count == 0, what="the slot to be freed")
    with open_ws(server, headers=admin) as ws:
        expect_welcome(ws)
