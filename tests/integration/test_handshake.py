"""The handshake of SPEC section 2 on real servers: every check, its status, headers and body."""

from __future__ import annotations

import asyncio
import base64
import threading
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from livepanel import BasicAuth, Broadcaster, LivePanelApp
from tests.conftest import LogCapture
from tests.integration.helpers import (
    AUTH,
    PASSWORD,
    TIMEOUT,
    USERNAME,
    Serve,
    admin_only,
    assert_refused,
    basic,
    expect_welcome,
    open_ws,
    raw_upgrade,
    read_head,
    refusal,
    wait_until,
)

# ---------------------------------------------------------------------- the server's extension


def test_servers_offer_the_http_response_extension(serve: Serve) -> None:
    """Every server under test offers websocket.http.response, so denials are real responses."""
    seen: list[Any] = []

    async def refuse(scope: Any) -> None:
        seen.append(scope.get("extensions"))

    server = serve(LivePanelApp(Broadcaster(), auth=refuse))
    assert_refused(refusal(server), 401, "unauthorized")
    assert len(seen) == 1
    assert "websocket.http.response" in (seen[0] or {})


def test_without_the_extension_a_denial_is_close_1008_before_accept(
    serve: Serve, server_logs: LogCapture
) -> None:
    """A server without websocket.http.response gets websocket.close 1008 and no accept."""
    endpoint = LivePanelApp(Broadcaster(), auth=admin_only())
    sent: list[dict[str, Any]] = []

    async def without_extension(scope: Any, receive: Any, send: Any) -> None:
        async def record(message: dict[str, Any]) -> None:
            sent.append(message)
            await send(message)

        scope = {**scope, "extensions": {}}
        await endpoint(scope, receive, record)

    server = serve(without_extension)
    refused = refusal(server, headers=None)
    assert refused.response.status_code == 403  # how servers answer a close before accept
    assert [m["type"] for m in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1008
    assert server_logs.errors() == []


# ---------------------------------------------------------------------- TLS


def test_require_tls_refuses_plain_ws_with_403(serve: Serve, server_logs: LogCapture) -> None:
    """require_tls refuses a ws:// connection with 403 before looking at credentials."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), require_tls=True))
    assert_refused(refusal(server), 403, "tls_required")
    assert server_logs.errors() == []


def test_require_tls_accepts_wss(serve_tls: Serve, client_tls: Any) -> None:
    """require_tls accepts a connection the server reports as wss."""
    server = serve_tls(LivePanelApp(Broadcaster(), auth=admin_only(), require_tls=True))
    with open_ws(server, ssl=client_tls) as ws:
        assert expect_welcome(ws)["server"].startswith("livepanel/")


def test_failed_check_stops_the_handshake_before_authentication(serve: Serve) -> None:
    """The first failing check answers: neither auth nor authorize runs after it."""
    calls: list[str] = []

    async def auth(scope: Any) -> str:
        calls.append("auth")
        return "admin"

    def authorize(principal: Any, scope: Any) -> bool:
        calls.append("authorize")
        return True

    server = serve(LivePanelApp(Broadcaster(), auth=auth, authorize=authorize, require_tls=True))
    assert_refused(refusal(server), 403, "tls_required")
    server = serve(LivePanelApp(Broadcaster(), auth=auth, authorize=authorize))
    assert_refused(refusal(server, origin="http://evil.example"), 403, "origin_not_allowed")
    assert calls == []


# ---------------------------------------------------------------------- origin


def test_same_origin_accepts_the_host_origin(serve: Serve) -> None:
    """By default an Origin whose host and port equal the Host header's passes."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server, origin=f"http://127.0.0.1:{server.port}") as ws:
        expect_welcome(ws)


def test_same_origin_does_not_compare_the_scheme(serve: Serve) -> None:
    """Same-origin ignores the scheme, since TLS often ends at a proxy."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server, origin=f"https://127.0.0.1:{server.port}") as ws:
        expect_welcome(ws)


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example:{port}", "http://127.0.0.1:{other}", "http://127.0.0.1", "null"],
    ids=["other-host", "other-port", "default-port", "null"],
)
def test_same_origin_refuses_other_origins_with_403(
    serve: Serve, server_logs: LogCapture, origin: str
) -> None:
    """By default another host, another port or the literal "null" is refused with 403."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    value = origin.format(port=server.port, other=server.port + 1)
    assert_refused(refusal(server, origin=value), 403, "origin_not_allowed")
    assert server_logs.errors() == []


def test_a_repeated_origin_header_is_refused_with_403(serve: Serve) -> None:
    """Two Origin headers are ambiguous, so the origin check refuses them."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), allowed_origins=["*"]))
    value = f"http://127.0.0.1:{server.port}"
    headers = [*AUTH.items(), ("Origin", value), ("Origin", value)]
    assert_refused(refusal(server, headers=headers), 403, "origin_not_allowed")


def test_request_without_origin_passes(serve: Serve) -> None:
    """A non-browser client sends no Origin and passes the origin check."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), allowed_origins=["https://x.io"]))
    with open_ws(server) as ws:
        expect_welcome(ws)


@pytest.mark.parametrize(
    ("allowed", "origin", "accepted"),
    [
        (["https://panel.example.com"], "https://panel.example.com", True),
        (["https://panel.example.com"], "http://panel.example.com", False),
        (["https://panel.example.com"], "https://panel.example.com:8443", False),
        (["https://panel.example.com:8443"], "https://panel.example.com:8443", True),
        (["https://*.example.com"], "https://a.b.example.com", True),
        (["https://*.example.com"], "https://example.com", False),
        (["https://*.example.com"], "https://evilexample.com", False),
        (["*"], "https://anything.test", True),
        (["*"], "null", False),
        (["null"], "null", True),
        (["https://panel.example.com"], "null", False),
    ],
    ids=[
        "exact",
        "exact-other-scheme",
        "exact-other-port",
        "exact-with-port",
        "wildcard-subdomains",
        "wildcard-not-bare-domain",
        "wildcard-not-suffix-of-label",
        "star-any",
        "star-not-null",
        "null-listed",
        "null-not-listed",
    ],
)
def test_allowed_origins_list_decides(
    serve: Serve, server_logs: LogCapture, allowed: list[str], origin: str, accepted: bool
) -> None:
    """A list of exact origins, wildcard patterns, "*" and "null" decides who connects."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), allowed_origins=allowed))
    if accepted:
        with open_ws(server, origin=origin) as ws:
            expect_welcome(ws)
    else:
        assert_refused(refusal(server, origin=origin), 403, "origin_not_allowed")
    assert server_logs.errors() == []


# ---------------------------------------------------------------------- authentication


def test_missing_credentials_get_401_with_basic_challenge(
    serve: Serve, server_logs: LogCapture
) -> None:
    """No Authorization header: 401 with WWW-Authenticate: Basic realm="livepanel"."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    refused = refusal(server, headers=None)
    assert_refused(refused, 401, "unauthorized")
    assert refused.response.headers["www-authenticate"].startswith('Basic realm="livepanel"')
    assert server_logs.errors() == []


def test_challenge_names_the_configured_realm(serve: Serve) -> None:
    """BasicAuth's realm is the one named in the 401's challenge."""
    auth = BasicAuth(lambda u, p: False, realm="ClawPanel")
    server = serve(LivePanelApp(Broadcaster(), auth=auth))
    refused = refusal(server, headers=None)
    assert refused.response.headers["www-authenticate"].startswith('Basic realm="ClawPanel"')


@pytest.mark.parametrize(
    ("username", "password"),
    [("admin", "wrong"), ("admin", "s3"), ("root", "s3:cret"), ("admin", "")],
    ids=["wrong-password", "password-cut-at-colon", "wrong-user", "empty-password"],
)
def test_wrong_credentials_get_401(
    serve: Serve, server_logs: LogCapture, username: str, password: str
) -> None:
    """Credentials the verifier rejects get 401 with the Basic challenge."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    refused = refusal(server, headers={"Authorization": basic(username, password)})
    assert_refused(refused, 401, "unauthorized")
    assert refused.response.headers["www-authenticate"].startswith("Basic realm=")
    assert server_logs.errors() == []


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"admin").decode(),
        "Basic " + base64.b64encode(b"\xff\xfeadmin:s3:cret").decode(),
        "Basic " + base64.b64encode(b":s3:cret").decode(),
        "Basic",
        "Basic YWRtaW46czM6Y3JldA",  # admin:s3:cret without its padding
        "Bearer " + base64.b64encode(b"admin:s3:cret").decode(),
        'Digest username="admin", realm="livepanel"',
    ],
    ids=[
        "bad-base64",
        "no-colon",
        "not-utf8",
        "empty-username",
        "no-credentials",
        "no-padding",
        "bearer-scheme",
        "digest-scheme",
    ],
)
def test_malformed_authorization_gets_401_never_500(
    serve: Serve, server_logs: LogCapture, authorization: str
) -> None:
    """A malformed Authorization header is a 401 with the challenge, never a server error."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    refused = refusal(server, headers={"Authorization": authorization})
    assert_refused(refused, 401, "unauthorized")
    assert "www-authenticate" in refused.response.headers
    assert server_logs.errors() == []


def test_authorization_with_raw_non_ascii_bytes_gets_401(
    serve: Serve, server_logs: LogCapture, server_kind: str, request: pytest.FixtureRequest
) -> None:
    """An Authorization header carrying raw non-ASCII bytes is a 401, never a 500."""
    if server_kind == "uvicorn-websockets":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="uvicorn 0.54's legacy websockets protocol encodes headers as latin-1 "
                "while websockets.legacy decodes them with surrogateescape: UnicodeEncodeError "
                "and a 500 before the app is called",
            )
        )
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    sock = raw_upgrade(server, auth=False, extra=b"Authorization: Basic \xc3\xa9\xff==\r\n")
    with sock:
        status_line = read_head(sock).split(b"\r\n")[0]
    assert status_line.split()[1] == b"401", status_line
    assert server_logs.errors() == []


def test_two_authorization_headers_get_401(serve: Serve, server_logs: LogCapture) -> None:
    """Two Authorization headers are ambiguous and refused with 401, even if one is right."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    extra = b"Authorization: " + basic("root", "x").encode() + b"\r\n"
    with raw_upgrade(server, extra=extra) as sock:
        status_line = read_head(sock).split(b"\r\n")[0]
    assert status_line.split()[1] == b"401", status_line
    assert server_logs.errors() == []


def test_password_with_colons_is_accepted(serve: Serve) -> None:
    """Only the first colon separates the username: the password may hold more."""
    auth = BasicAuth(lambda u, p: (u, p) == ("ops", "a:b::c:"))
    server = serve(LivePanelApp(Broadcaster(), auth=auth))
    with open_ws(server, headers={"Authorization": basic("ops", "a:b::c:")}) as ws:
        expect_welcome(ws)


def test_async_verifier_is_awaited(serve: Serve) -> None:
    """BasicAuth takes an async verify function as well as a sync one."""

    async def verify(username: str, password: str) -> bool:
        return (username, password) == ("admin", "s3:cret")

    server = serve(LivePanelApp(Broadcaster(), auth=BasicAuth(verify)))
    with open_ws(server) as ws:
        expect_welcome(ws)
    assert_refused(
        refusal(server, headers={"Authorization": basic("admin", "no")}), 401, "unauthorized"
    )


def test_raising_authenticator_refuses_with_401(serve: Serve, server_logs: LogCapture) -> None:
    """An Authenticator that raises refuses the connection (fail closed) with 401."""

    async def broken(scope: Any) -> Any:
        raise LookupError("session store unavailable")

    server = serve(LivePanelApp(Broadcaster(), auth=broken))
    assert_refused(refusal(server), 401, "unauthorized")
    wait_until(lambda: any("authenticator raised" in e for e in server_logs.errors()))


def test_credentials_are_never_logged(serve: Serve, server_logs: LogCapture) -> None:
    """Neither the password nor the Authorization header appears in any log record."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
    refusal(server, headers={"Authorization": basic("admin", "hunter2:guess")})
    text = server_logs.text()
    for secret in ("s3:cret", "hunter2", AUTH["Authorization"].split()[1]):
        assert secret not in text


# ---------------------------------------------------------------------- authorization


def _sync_refusal(principal: Any, scope: Any) -> bool:
    return False


async def _async_refusal(principal: Any, scope: Any) -> bool:
    return False


@pytest.mark.parametrize("authorize", [_sync_refusal, _async_refusal], ids=["sync", "async"])
def test_authorize_returning_false_gets_403(
    serve: Serve, server_logs: LogCapture, authorize: Any
) -> None:
    """authorize(principal, scope) returning false (sync or async) refuses with 403."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), authorize=authorize))
    assert_refused(refusal(server), 403, "forbidden")
    assert server_logs.errors() == []


def test_authorize_gets_the_principal_and_the_scope(serve: Serve) -> None:
    """authorize is called with the authenticated principal and the handshake's scope."""
    calls: list[tuple[Any, str]] = []

    async def authorize(principal: Any, scope: Any) -> bool:
        calls.append((principal, scope["type"]))
        return principal == "admin"

    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), authorize=authorize))
    with open_ws(server) as ws:
        expect_welcome(ws)
    assert calls == [("admin", "websocket")]


def test_accepted_principal_is_in_the_scope(serve: Serve) -> None:
    """After accept, scope["livepanel.principal"] holds the verifier's principal."""

    class User:
        def __init__(self, username: str) -> None:
            self.username = username

    alice = User("alice")
    scopes: list[Any] = []

    def authorize(principal: Any, scope: Any) -> bool:
        scopes.append(scope)
        return True

    auth = BasicAuth(lambda u, p: alice if (u, p) == ("alice", "pw") else None)
    server = serve(LivePanelApp(Broadcaster(), auth=auth, authorize=authorize))
    with open_ws(server, headers={"Authorization": basic("alice", "pw")}) as ws:
        expect_welcome(ws)
        assert scopes[0]["livepanel.principal"] is alice


def test_basic_auth_principal_defaults_to_the_username(serve: Serve) -> None:
    """A verifier returning True makes the username the principal in the scope."""
    scopes: list[Any] = []

    def authorize(principal: Any, scope: Any) -> bool:
        scopes.append(scope)
        return True

    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), authorize=authorize))
    with open_ws(server) as ws:
        expect_welcome(ws)
        assert scopes[0]["livepanel.principal"] == "admin"


# ---------------------------------------------------------------------- limits


def test_max_connections_refuses_with_429(serve: Serve, server_logs: LogCapture) -> None:
    """Beyond max_connections a handshake is refused with 429."""
    app = LivePanelApp(Broadcaster(), auth=admin_only(), max_connections=2)
    server = serve(app)
    with open_ws(server) as first, open_ws(server) as second:
        expect_welcome(first)
        expect_welcome(second)
        assert_refused(refusal(server), 429, "too_many_connections")
    assert server_logs.errors() == []


def test_concurrent_handshakes_cannot_overshoot_max_connections(
    serve: Serve, server_logs: LogCapture
) -> None:
    """Twelve simultaneous handshakes against max_connections=5: five accepted, seven 429."""

    async def slow_verify(username: str, password: str) -> bool:
        await asyncio.sleep(0.02)  # every handshake is inside the check at once
        return (username, password) == (USERNAME, PASSWORD)

    app = LivePanelApp(Broadcaster(), auth=BasicAuth(slow_verify), max_connections=5)
    server = serve(app)
    start = threading.Barrier(12, timeout=TIMEOUT)
    outcomes: list[int] = []
    with ExitStack() as stack:

        def client() -> None:
            start.wait()
            try:
                ws = stack.enter_context(open_ws(server))
            except InvalidStatus as refused:
                outcomes.append(refused.response.status_code)
            else:
                expect_welcome(ws)
                outcomes.append(101)

        threads = [threading.Thread(target=client) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert sorted(outcomes) == [101] * 5 + [429] * 7
        assert app.connection_count == 5
    wait_until(lambda: app.connection_count == 0)
    assert server_logs.errors() == []


def test_closing_a_connection_frees_its_slot(serve: Serve) -> None:
    """Once a connection closes, its slot under max_connections can be taken again."""
    app = LivePanelApp(Broadcaster(), auth=admin_only(), max_connections=1)
    server = serve(app)
    with open_ws(server) as ws:
        expect_welcome(ws)
    wait_until(lambda: app.connection_count == 0, what="the slot to be freed")
    with open_ws(server) as ws:
        expect_welcome(ws)


def test_max_connections_per_user_refuses_that_user_with_429(
    serve: Serve, server_logs: LogCapture
) -> None:
    """Beyond max_connections_per_user the same user gets 429; another user still connects."""
    users = {"admin": "s3:cret", "bob": "b0b"}
    auth = BasicAuth(lambda u, p: users.get(u) == p)
    app = LivePanelApp(Broadcaster(), auth=auth, max_connections_per_user=1)
    server = serve(app)
    with open_ws(server) as first:
        expect_welcome(first)
        assert_refused(refusal(server), 429, "too_many_connections")
        with open_ws(server, headers={"Authorization": basic("bob", "b0b")}) as bob:
            expect_welcome(bob)
    assert server_logs.errors() == []


def test_per_user_limit_counts_the_principal_username(serve: Serve) -> None:
    """A principal's username attribute names the user the per-user limit counts."""

    class User:
        def __init__(self, username: str) -> None:
            self.username = username

    # two logins map to the same account
    auth = BasicAuth(lambda u, p: User("ops") if p == "pw" else None)
    server = serve(LivePanelApp(Broadcaster(), auth=auth, max_connections_per_user=1))
    with open_ws(server, headers={"Authorization": basic("ops-laptop", "pw")}) as ws:
        expect_welcome(ws)
        refused = refusal(server, headers={"Authorization": basic("ops-phone", "pw")})
        assert_refused(refused, 429, "too_many_connections")


def test_limits_are_checked_after_authorization(serve: Serve) -> None:
    """A full server still answers 401 to a client without credentials: auth comes first."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only(), max_connections=1))
    with open_ws(server) as ws:
        expect_welcome(ws)
        assert_refused(refusal(server, headers=None), 401, "unauthorized")
