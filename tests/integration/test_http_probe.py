"""A plain HTTP request to the endpoint runs the same checks: 401/403/429, else 426."""

from __future__ import annotations

from typing import Any

import httpx

from livepanel import BasicAuth, Broadcaster, LivePanelApp
from tests.conftest import LogCapture
from tests.integration.helpers import (
    AUTH,
    TIMEOUT,
    Serve,
    admin_only,
    assert_denied,
    basic,
    expect_welcome,
    open_ws,
)
from tests.servers import RunningServer


def get(
    server: RunningServer, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    """GET the endpoint over plain HTTP."""
    with httpx.Client(trust_env=False, timeout=TIMEOUT, **kwargs) as client:
        return client.get(f"{server.http_url}/ws", headers=headers)


def assert_response(response: httpx.Response, status: int, error: str) -> None:
    assert_denied(response.status_code, response.headers, response.content, status, error)


def test_get_passing_every_check_gets_426(serve: Serve, server_logs: LogCapture) -> None:
    """With every check passed, a plain GET learns it must upgrade: 426 Upgrade: websocket."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    response = get(server, AUTH)
    assert_response(response, 426, "upgrade_required")
    assert response.headers["upgrade"].lower() == "websocket"
    assert server_logs.errors() == []


def test_get_without_credentials_gets_401_with_challenge(
    serve: Serve, server_logs: LogCapture
) -> None:
    """A GET without credentials gets 401 and the Basic challenge, as the handshake would."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    response = get(server)
    assert_response(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith('Basic realm="livepanel"')
    assert server_logs.errors() == []


def test_get_with_malformed_authorization_gets_401(serve: Serve, server_logs: LogCapture) -> None:
    """A GET with a malformed Authorization header gets 401, never 500."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    response = get(server, {"Authorization": "Basic %%%"})
    assert_response(response, 401, "unauthorized")
    assert server_logs.errors() == []


def test_get_from_another_origin_gets_403(serve: Serve, server_logs: LogCapture) -> None:
    """A GET from a refused Origin gets 403 before credentials are looked at."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    response = get(server, {"Origin": "https://evil.example"})
    assert_response(response, 403, "origin_not_allowed")
    assert server_logs.errors() == []


def test_get_over_plain_http_gets_403_when_tls_is_required(
    serve: Serve, server_logs: LogCapture
) -> None:
    """require_tls refuses a plain http:// request with 403."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), require_tls=True))
    assert_response(get(server, AUTH), 403, "tls_required")
    assert server_logs.errors() == []


def test_get_over_https_passes_require_tls(serve_tls: Serve, client_tls: Any) -> None:
    """require_tls accepts an https:// request, which then learns to upgrade (426)."""
    server = serve_tls(LivePanelApp(Broadcaster(), auth=admin_only(), require_tls=True))
    assert_response(get(server, AUTH, verify=client_tls), 426, "upgrade_required")


def test_get_refused_by_authorize_gets_403(serve: Serve, server_logs: LogCapture) -> None:
    """A GET whose principal authorize refuses gets 403."""
    app = LivePanelApp(Broadcaster(), auth=admin_only(), authorize=lambda p, s: p != "admin")
    server = serve(app)
    assert_response(get(server, AUTH), 403, "forbidden")
    assert server_logs.errors() == []


def test_get_when_full_gets_429(serve: Serve, server_logs: LogCapture) -> None:
    """A GET while max_connections are taken gets 429."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), max_connections=1))
    with open_ws(server) as ws:
        expect_welcome(ws)
        assert_response(get(server, AUTH), 429, "too_many_connections")
    assert server_logs.errors() == []


def test_get_when_the_user_is_at_its_limit_gets_429(serve: Serve) -> None:
    """A GET by a user holding max_connections_per_user gets 429; another user gets 426."""
    users = {"admin": "s3:cret", "bob": "b0b"}
    auth = BasicAuth(lambda u, p: users.get(u) == p)
    server = serve(LivePanelApp(Broadcaster(), auth=auth, max_connections_per_user=1))
    with open_ws(server) as ws:
        expect_welcome(ws)
        assert_response(get(server, AUTH), 429, "too_many_connections")
        assert_response(
            get(server, {"Authorization": basic("bob", "b0b")}), 426, "upgrade_required"
        )


def test_get_does_not_take_a_connection_slot(serve: Serve) -> None:
    """A probe is not a connection: after it, max_connections=1 still admits a WebSocket."""
    app = LivePanelApp(Broadcaster(), auth=admin_only(), max_connections=1)
    server = serve(app)
    assert_response(get(server, AUTH), 426, "upgrade_required")
    assert app.connection_count == 0
    with open_ws(server) as ws:
        expect_welcome(ws)
