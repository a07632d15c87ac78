"""The demo's ASGI app: the dashboard page, its REST API and the WebSocket endpoint.

Plain ASGI, so the demo needs nothing beyond an ASGI server. Every route sits
behind the same Basic Auth as the WebSocket endpoint, and every guess counts
against the endpoint's failed-authentication throttle; the browser sends the
credentials it cached for the page with the WebSocket handshake too (see
docs/browser.md). The page gets its state inside the stream (``?state=1``,
docs/state.md): there is no snapshot route and no reducer of the demo's own.

| route | what |
|---|---|
| ``GET /`` | the dashboard |
| ``GET /livepanel.js``, ``/static/*`` | the client and the page's assets |
| ``POST /api/sessions/spawn`` | ``{"agentId", "kind"?, "label"?}``: start a session (broadcasts) |
| ``POST /api/sessions/{key}/kill`` | end a session (broadcasts) |
| ``GET /api/stats`` | the broadcaster's counters, and WebSocket handshakes and probes seen |
| ``/ws`` | the livepanel endpoint |
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from importlib import resources
from typing import Any, cast

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope, WWWScope

from livepanel.asgi import LivePanelApp
from livepanel.assets import Asset, ScriptApp
from livepanel.auth import BasicAuth, parse_basic_authorization
from livepanel.broadcaster import Broadcaster
from livepanel.demo.gateway import AGENTS, KINDS, SimulatedGateway
from livepanel.origin import OriginPolicy
from livepanel.presence import track
from livepanel.protocol import CLOSE_POLICY_VIOLATION, decode_json
from livepanel.throttle import client_address

__all__ = ["DemoApp"]

logger = logging.getLogger("livepanel")

_MAX_BODY = 16 * 1024
_PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; connect-src 'self'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def _asset(name: str, content_type: str) -> Asset:
    body = (resources.files("livepanel.demo") / "static" / name).read_bytes()
    return Asset(body, content_type)


class DemoApp:
    """The ClawPanel-like demo dashboard as one ASGI app.

    Args:
        username: the Basic Auth user name.
        password: its password.
        broadcaster: where events go; a new in-memory one when ``None``.
        interval: mean seconds between simulated gateway events (``0``: none).
        heartbeat_interval: the WebSocket endpoint's heartbeat, in seconds.

    Example::

        app = DemoApp(username="admin", password="secret", interval=0.5)
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """

    def __init__(
        self,
        *,
        username: str,
        password: str,
        broadcaster: Broadcaster | None = None,
        interval: float = 1.5,
        heartbeat_interval: float = 25.0,
    ) -> None:
        self.broadcaster = broadcaster if broadcaster is not None else Broadcaster()
        self.auth = BasicAuth.for_user(username, password, realm="livepanel demo")
        self.endpoint = LivePanelApp(
            self.broadcaster, auth=self.auth, heartbeat_interval=heartbeat_interval
        )
        self.gateway = SimulatedGateway(self.broadcaster, interval=interval)
        track(self.broadcaster, announce=True)  # "who else is watching", in the top bar
        self.same_origin = OriginPolicy(None)
        self.handshakes = 0
        self.probes = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._started: asyncio.Future[None] | None = None
        self._files = {
            "/": _asset("index.html", "text/html; charset=utf-8"),
            "/static/dashboard.css": _asset("dashboard.css", "text/css; charset=utf-8"),
            "/static/dashboard.js": _asset("dashboard.js", "text/javascript; charset=utf-8"),
            "/livepanel.js": ScriptApp(),
        }
        self._files["/"].headers.extend(_PAGE_HEADERS)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the broadcaster and the simulated gateway (once)."""
        if self._started is None:
            loop = asyncio.get_running_loop()
            started = self._started = loop.create_future()
            try:
                await self.broadcaster.start()
                self._tasks.append(loop.create_task(self.gateway.run()))
            except BaseException as exc:
                started.set_exception(exc)
                started.exception()  # retrieved: raised to the caller below
                raise
            started.set_result(None)
        await self._started

    async def stop(self) -> None:
        """Stop the gateway and close every connection."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.broadcaster.close()

    # ------------------------------------------------------------------ ASGI

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.start()
        www = cast(WWWScope, scope)
        if www["path"].rstrip("/") == "/ws":
            if kind == "websocket":
                self.handshakes += 1
            else:
                self.probes += 1
            await self.endpoint(scope, receive, send)
        elif kind == "http":
            await self._http(cast(HTTPScope, scope), receive, send)
        else:
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION, "reason": ""})

    async def _lifespan(self, receive: ASGIReceiveCallable, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: HTTPScope, receive: ASGIReceiveCallable, send: Any) -> None:
        accepted, wait = await self._authenticate(scope)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            message = f"too many failed authentications from this address; retry in {seconds} s"
            retry = (b"retry-after", str(seconds).encode())
            await _json(send, 429, _error("too_many_failures", message), [retry])
            return
        if not accepted:
            await _json(send, 401, _error("unauthorized", "log in"), [self._challenge])
            return
        path, method = scope["path"], scope["method"]
        asset = self._files.get(path)
        if asset is not None:
            await asset(scope, receive, send)
        elif path == "/api/stats" and method != "GET":
            await _json(send, 405, _error("method_not_allowed", "use GET"), [(b"allow", b"GET")])
        elif path == "/api/stats":
            stats = {**self.broadcaster.stats(), "handshakes": self.handshakes}
            await _json(send, 200, {**stats, "probes": self.probes})
        elif path.startswith("/api/sessions/"):
            if method != "POST":
                await _json(send, 405, _error("method_not_allowed", "use POST"), [_ALLOW_POST])
            elif not self._same_origin(scope):
                await _json(send, 403, _error("origin_not_allowed", "cross-site request refused"))
            else:
                await self._sessions(path, receive, send)
        else:
            await _json(send, 404, _error("not_found", f"no such page: {path}"))

    async def _authenticate(self, scope: HTTPScope) -> tuple[bool, float | None]:
        """Basic Auth for the page and the API, through the endpoint's throttle: one budget
        of guesses per address, whichever route they go through. (accepted, seconds to wait)."""
        throttle = self.endpoint.auth_throttle
        www = cast(WWWScope, scope)
        if throttle is None:
            return bool(await self.auth(www)), None
        address = client_address(scope.get("client"))
        presented = self.auth.credentials_presented(www)
        claimed = parse_basic_authorization(
            next((v for k, v in scope["headers"] if k.lower() == b"authorization"), None)
        )
        user = claimed[0] if claimed else None
        wait = throttle.attempt(address, user) if presented else throttle.retry_after(address)
        if wait is not None:
            return False, wait
        accepted = False
        try:
            accepted = bool(await self.auth(www))
        finally:
            if presented:
                throttle.finished(address, user, refused=not accepted)
        return accepted, None

    @property
    def _challenge(self) -> tuple[bytes, bytes]:
        return (b"www-authenticate", self.auth.challenge.encode("latin-1"))

    def _same_origin(self, scope: HTTPScope) -> bool:
        headers = {name.lower(): value.decode("latin-1") for name, value in scope["headers"]}
        return self.same_origin.allows(headers.get(b"origin"), headers.get(b"host"))

    async def _sessions(self, path: str, receive: ASGIReceiveCallable, send: Any) -> None:
        if path == "/api/sessions/spawn":
            body = await _read_json(receive)
            if not isinstance(body, dict):
                await _json(send, 400, _error("invalid_body", "send a JSON object"))
                return
            agent_id = body.get("agentId", AGENTS[0])
            kind = body.get("kind", "direct")
            label = body.get("label")
            if not isinstance(label, (str, type(None))) or kind not in KINDS:
                await _json(send, 400, _error("invalid_body", f"kind is one of {KINDS}"))
                return
            try:
                key = self.gateway.spawn(agent_id, kind, (label or "").strip()[:80] or None)
            except ValueError as exc:
                await _json(send, 400, _error("invalid_body", str(exc)))
                return
            await _json(send, 201, {"sessionKey": key})
            return
        key, _, action = path.removeprefix("/api/sessions/").rpartition("/")
        if action != "kill" or not key:
            await _json(send, 404, _error("not_found", "POST /api/sessions/<key>/kill"))
        elif self.gateway.kill(key):  # the server has already percent-decoded the path
            await _json(send, 200, {"sessionKey": key})
        else:
            await _json(send, 404, _error("not_found", "no such session"))


_ALLOW_POST = (b"allow", b"POST")


def _error(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


async def _read_json(receive: ASGIReceiveCallable) -> Any:
    """The request body as JSON (``{}`` when empty), or ``None`` when unreadable or too big."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if len(body) > _MAX_BODY:
            return None
        if not message.get("more_body"):
            break
    if not body.strip():
        return {}
    try:
        return decode_json(body)  # no NaN or Infinity
    except (ValueError, RecursionError):
        return None


async def _json(
    send: Any, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(data, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
