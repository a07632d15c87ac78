"""livepanel.js in Chromium over both transports: the SSE fallback behind a proxy
that drops WebSocket upgrades, and tabs sharing one connection (``shared: true``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from livepanel import BasicAuth, Broadcaster, LivePanelApp
from livepanel.assets import ScriptApp
from livepanel.events import SessionCreated
from tests.browser.conftest import wait_until
from tests.deployment.test_nginx import adapt, nginx_binary, recipe, run_nginx
from tests.servers import free_port, run_server

PAGE = b"<!doctype html><title>livepanel transports</title>"


class SseCounter:
    """ASGI middleware: how many event streams are open right now (seen by the app)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.open = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        stream = b"text/event-stream" in headers.get(b"accept", b"")
        self.open += stream
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= stream


def site(broadcaster: Broadcaster, auth: Any = None) -> SseCounter:
    """A blank page, /livepanel.js and the endpoint at /ws (by default anonymous)."""
    endpoint = LivePanelApp(broadcaster, auth=auth, heartbeat_interval=1.0)
    script = ScriptApp()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/html")],
                }
            )
            await send({"type": "http.response.body", "body": PAGE})
        elif scope["type"] == "http" and scope["path"] == "/livepanel.js":
            await script(scope, receive, send)
        else:
            await endpoint(scope, receive, send)

    return SseCounter(app)


def without_upgrades(config: str) -> str:
    """The recipe with the two lines that pass the WebSocket upgrade on removed."""
    for line in (
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
    ):
        assert line in config, f"the recipe no longer contains {line!r}"
        config = config.replace(line, "")
    return config


@pytest.fixture
def proxied(
    tmp_path: Path, tls_certificate: tuple[str, str]
) -> Iterator[tuple[str, Broadcaster, SseCounter]]:
    """The app behind the nginx recipe without WebSocket upgrades: (page, broadcaster, counter)."""
    nginx_binary()
    cert, key = (Path(f) for f in tls_certificate)
    broadcaster = Broadcaster()
    app = site(broadcaster)
    listen = free_port()
    with run_server(
        app, "uvicorn-websockets", proxy_headers=True, forwarded_allow_ips="127.0.0.1"
    ) as upstream:
        block = without_upgrades(
            adapt(recipe(), listen=listen, upstream=upstream.port, cert=cert, key=key)
        )
        with run_nginx(tmp_path, block, listen):
            yield f"https://127.0.0.1:{listen}/", broadcaster, app


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[str], Any]]:
    """Open ``url`` in a fresh page (one context per test, so tabs share a browser profile)."""
    context = browser.new_context(ignore_https_errors=True)

    def open_page(url: str) -> Any:
        page = context.new_page()
        page.goto(url)
        return page

    try:
        yield open_page
    finally:
        context.close()


CONNECT = """async (options) => {
  const { connect } = await import("/livepanel.js");
  window.seen = [];
  window.statuses = [];
  window.client = connect("/ws", options);
  window.client.on("*", (event) => window.seen.push(event.payload.sessionKey));
  window.client.on("status", (change) => window.statuses.push(change.status));
}"""


def publish(broadcaster: Broadcaster, key: str) -> None:
    broadcaster.publish(SessionCreated(session_key=key, agent_id="a1", kind="direct"))


def test_behind_a_proxy_that_drops_upgrades_the_page_falls_back_to_sse_and_stays_live(
    proxied: tuple[str, Broadcaster, SseCounter], new_page: Callable[[str], Any]
) -> None:
    """nginx drops upgrades: auto falls back to SSE, events arrive, the server sees a stream."""
    url, broadcaster, counter = proxied
    page = new_page(url)
    page.evaluate(CONNECT, {"initialDelay": 50, "maxDelay": 200})
    wait_until(page, "() => window.client.status === 'open'", timeout=15)
    assert page.evaluate("() => window.client.transport") == "sse"
    assert counter.open == 1
    assert broadcaster.connection_count == 1
    for n in range(5):
        publish(broadcaster, f"s{n}")
    wait_until(page, "() => window.seen.length >= 5")
    assert page.evaluate("() => window.seen") == [f"s{n}" for n in range(5)]
    # still live after several heartbeats: the watchdog is fed by `: ping` comments
    page.wait_for_timeout(3000)
    publish(broadcaster, "late")
    wait_until(page, "() => window.seen.includes('late')")
    assert page.evaluate("() => window.statuses") == [
        "connecting",
        "reconnecting",
        "reconnecting",
        "open",
    ]


@pytest.fixture
def direct() -> Iterator[tuple[str, Broadcaster]]:
    """The same site straight on uvicorn (http://127.0.0.1 is a secure context: Web Locks work)."""
    broadcaster = Broadcaster()
    with run_server(site(broadcaster), "uvicorn-websockets") as server:
        yield f"http://127.0.0.1:{server.port}/", broadcaster


def test_three_shared_tabs_hold_one_connection_and_survive_the_leader_closing(
    direct: tuple[str, Broadcaster], new_page: Callable[[str], Any]
) -> None:
    """Three tabs, one server connection; the leader closes, the others see every event once."""
    url, broadcaster = direct
    options = {"shared": True, "initialDelay": 50, "maxDelay": 200}
    tabs = []
    for _ in range(3):
        page = new_page(url)
        page.evaluate(CONNECT, options)
        wait_until(page, "() => window.client.status === 'open' && window.client.role !== null")
        tabs.append(page)
    roles = [page.evaluate("() => window.client.role") for page in tabs]
    assert sorted(roles) == ["follower", "follower", "leader"]
    assert broadcaster.connection_count == 1
    publish(broadcaster, "s0")
    publish(broadcaster, "s1")
    for page in tabs:
        wait_until(page, "() => window.seen.length >= 2")
    leader = tabs[roles.index("leader")]
    others = [page for page in tabs if page is not leader]
    publish(broadcaster, "s2")  # possibly on its way through the channel as the leader goes
    leader.close()
    for n in range(3, 8):  # published while the lock passes on: resumed with since
        publish(broadcaster, f"s{n}")
    for page in others:
        wait_until(page, "() => window.seen.length >= 8", timeout=15)
    eventually(lambda: broadcaster.connection_count == 1)
    for n in range(8, 12):
        publish(broadcaster, f"s{n}")
    publish(broadcaster, "end")  # behind any duplicate a replay could have sent
    for page in others:
        wait_until(page, "() => window.seen.includes('end')", timeout=15)
        assert page.evaluate("() => window.seen") == [f"s{n}" for n in range(12)] + ["end"]
        assert page.evaluate("() => window.client.status") == "open"
    roles = [page.evaluate("() => window.client.role") for page in others]
    assert sorted(roles) == ["follower", "leader"]
    assert broadcaster.connection_count == 1


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds, polling; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s"
        time.sleep(0.02)


def test_over_sse_a_refused_stream_ends_in_auth_failed_and_is_not_retried(
    browser: Any,
) -> None:
    """transport "sse" with wrong credentials: 401, status auth_failed, and no retry."""
    broadcaster = Broadcaster()
    app = site(broadcaster, auth=BasicAuth(lambda u, p: (u, p) == ("admin", "secret")))
    requests: list[str] = []
    with run_server(app, "uvicorn-websockets") as server:
        context = browser.new_context(http_credentials={"username": "admin", "password": "wrong"})
        try:
            page = context.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(f"http://127.0.0.1:{server.port}/")
            page.evaluate(CONNECT, {"transport": "sse", "initialDelay": 50, "maxDelay": 200})
            wait_until(page, "() => window.client.status === 'auth_failed'")
            refused = [url for url in requests if "/ws" in url]
            assert 1 <= len(refused) <= 2  # Chromium may answer the challenge once itself
            page.wait_for_timeout(1000)  # longer than the next backoff delays: nothing may happen
            assert [url for url in requests if "/ws" in url] == refused
            assert page.evaluate("() => window.statuses") == ["connecting", "auth_failed"]
            assert page.evaluate("() => window.client.transport") == "sse"
        finally:
            context.close()
