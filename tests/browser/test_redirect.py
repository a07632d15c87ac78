"""livepanel.js in Chromium against ``app.mount("/ws", LivePanelApp(...))`` and
``connect("/ws")``: the mount's slash redirect is followed for the WebSocket too (logged),
and a fallback to SSE, where WebSocket really does not get through, is a console warning,
an ``open`` status with ``fallback: true`` and a count on the server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from livepanel import Broadcaster, LivePanelApp
from livepanel.assets import ScriptApp
from livepanel.events import SessionCreated
from tests.browser.conftest import wait_until
from tests.servers import run_server

CONNECT = """async () => {
  const { connect } = await import("/livepanel.js");
  window.seen = [];
  window.changes = [];
  window.client = connect("/ws", { initialDelay: 50, maxDelay: 200 });
  window.client.on("*", (event) => window.seen.push(event.payload.sessionKey));
  window.client.on("status", (change) => window.changes.push(change));
}"""


def page_app(endpoint: Any) -> Starlette:
    """A blank page, /livepanel.js, and the endpoint mounted at /ws as the issue's reader did."""

    async def home(request: Any) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>mounted</title>")

    return Starlette(
        routes=[
            Route("/", home),
            Mount("/livepanel.js", ScriptApp()),
            Mount("/ws", endpoint),
        ]
    )


class NoUpgrades:
    """ASGI middleware that closes every WebSocket handshake before the app sees it, as a
    proxy dropping the upgrade does; plain HTTP passes."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)


@pytest.fixture
def console_page(browser: Any) -> Iterator[Any]:
    """A fresh page whose console lines are kept in ``page.lines``."""
    context = browser.new_context()
    page = context.new_page()
    page.lines = []
    page.on("console", lambda message: page.lines.append((message.type, message.text)))
    try:
        yield page
    finally:
        context.close()


def publish(broadcaster: Broadcaster, key: str) -> None:
    broadcaster.publish(SessionCreated(session_key=key, agent_id="a1", kind="direct"))


def test_mount_at_ws_with_connect_ws_ends_on_websocket_not_sse(console_page: Any) -> None:
    """The probe's 307 to /ws/ moves the WebSocket there: open over WebSocket, logged, no SSE."""
    broadcaster = Broadcaster()
    endpoint = LivePanelApp(broadcaster, auth=None)
    page = console_page
    with run_server(page_app(endpoint), "uvicorn-websockets") as server:
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.evaluate(CONNECT)
        wait_until(page, "() => window.client.status === 'open'", timeout=15)
        assert page.evaluate("() => window.client.transport") == "websocket"
        assert page.evaluate("() => new URL(window.client.endpoint).pathname") == "/ws/"
        assert page.evaluate("() => window.changes.at(-1).transport") == "websocket"
        assert ("info", "livepanel: /ws redirects to /ws/; connecting the WebSocket to /ws/") in (
            page.lines
        )
        assert not [line for line in page.lines if line[0] == "warning"]
        assert broadcaster.stats()["connections_by_transport"] == {"websocket": 1}
        assert endpoint.sse_fallbacks == 0
        publish(broadcaster, "s1")
        wait_until(page, "() => window.seen.includes('s1')")


def test_where_websocket_cannot_get_through_the_fallback_is_visible_and_counted(
    console_page: Any,
) -> None:
    """Handshakes closed in front of the app: SSE, a console warning, fallback: true, one count."""
    broadcaster = Broadcaster()
    endpoint = LivePanelApp(broadcaster, auth=None)
    page = console_page
    with run_server(NoUpgrades(page_app(endpoint)), "uvicorn-websockets") as server:
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.evaluate(CONNECT)
        wait_until(page, "() => window.client.status === 'open'", timeout=15)
        assert page.evaluate("() => window.client.transport") == "sse"
        change = page.evaluate("() => window.changes.at(-1)")
        assert (change["transport"], change["fallback"]) == ("sse", True)
        warnings = [text for kind, text in page.lines if kind == "warning"]
        assert len(warnings) == 1
        assert warnings[0].startswith("livepanel: WebSocket handshakes to /ws/ fail")
        assert "falling back to Server-Sent Events" in warnings[0]
        assert endpoint.sse_fallbacks == 1
        assert broadcaster.stats()["connections_by_transport"] == {"sse": 1}
        publish(broadcaster, "s1")
        wait_until(page, "() => window.seen.includes('s1')")
