"""The Quickstart's middleware app (tests/frameworks/composition_app.py) behind a host
middleware that plays a server telling its clients when to come back.

``uvicorn tests.browser.hinting_app:app`` with the environment composition_app reads.
Routes of the middleware, for the test driving the browser:

- ``GET /``: a blank page behind the app's Basic login (so the browser holds the
  credentials for the whole origin, the WebSocket handshake included);
- ``POST /_hints/kick?code=1012&reason=retry_after%3D1.5``: close every open WebSocket
  connection now with that code and reason, as a worker shutting down or over its
  admission rate does;
- ``POST /_hints/refuse?count=1&retry_after=2``: refuse the next ``count`` WebSocket
  handshakes, and answer the HTTP probe that follows each with 429 and ``Retry-After``;
- ``POST /_hints/publish?count=N``: publish N ``session.created`` events, answering their ids;
- ``GET /_hints/log``: what happened, ``[[what, monotonic seconds], ...]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any
from urllib.parse import parse_qs

from livepanel.events import SessionCreated
from tests.frameworks import composition_app

PAGE = b"<!doctype html><title>hints</title><body>hints</body>"


class Hints:
    """A host middleware in front of everything, the livepanel endpoint at ``path`` included."""

    def __init__(self, app: Any, path: str = "/ws") -> None:
        self.app = app
        self.path = path
        self.kicks: set[asyncio.Future[tuple[int, str]]] = set()
        self.refusing = 0
        self.retry_after = "2"
        self.probes_to_refuse = 0
        self.log: list[tuple[str, float]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "websocket" and path == self.path:
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http" and path == self.path and self.probes_to_refuse > 0:
            self.probes_to_refuse -= 1
            self.log.append(("probe 429", time.monotonic()))
            body = json.dumps({"error": "busy", "message": "come back later"}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"retry-after", self.retry_after.encode()),
            ]
            await _answer(send, 429, body, headers)
        elif scope["type"] == "http" and path == "/":
            await self._page(scope, send)
        elif scope["type"] == "http" and path.startswith("/_hints/"):
            await self._control(scope, send)
        else:
            await self.app(scope, receive, send)

    async def _page(self, scope: Any, send: Any) -> None:
        if not await composition_app.auth(scope):
            challenge = composition_app.auth.challenge.encode()
            await _answer(send, 401, b"log in", [(b"www-authenticate", challenge)])
            return
        await _answer(send, 200, PAGE, [(b"content-type", b"text/html")])

    async def _websocket(self, scope: Any, receive: Any, send: Any) -> None:
        if self.refusing > 0:
            self.refusing -= 1
            self.probes_to_refuse += 1
            self.log.append(("refused", time.monotonic()))
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1013})  # before accept: a 403
            return
        self.log.append(("handshake", time.monotonic()))
        kick: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.kicks.add(kick)

        async def gated(message: Any) -> None:
            # once kicked the close is ours: the app, cancelled, says nothing more
            if kick.done():
                if message["type"] == "websocket.send":
                    raise OSError("the connection was closed by the hint")
                return
            await send(message)

        inner = asyncio.ensure_future(self.app(scope, receive, gated))
        try:
            await asyncio.wait({inner, kick}, return_when=asyncio.FIRST_COMPLETED)
            if kick.done() and not inner.done():
                inner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await inner
                code, reason = kick.result()
                await send({"type": "websocket.close", "code": code, "reason": reason})
            else:
                await inner
        finally:
            self.kicks.discard(kick)
            if not inner.done():
                inner.cancel()

    async def _control(self, scope: Any, send: Any) -> None:
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        action = scope["path"].removeprefix("/_hints/")
        answer: Any = {"ok": True}
        if action == "kick":
            code, reason = int(query["code"]), query.get("reason", "")
            self.log.append((f"kick {code}", time.monotonic()))
            for kick in list(self.kicks):
                if not kick.done():
                    kick.set_result((code, reason))
            answer = {"kicked": len(self.kicks)}
        elif action == "refuse":
            self.refusing = int(query.get("count", "1"))
            self.retry_after = query.get("retry_after", "2")
        elif action == "publish":
            ids = []
            for n in range(int(query.get("count", "1"))):
                event = await composition_app.broadcaster.apublish(
                    SessionCreated(session_key=f"s-{n}", agent_id="atlas", kind="direct")
                )
                ids.append(event.id)
            answer = {"ids": ids}
        elif action == "log":
            answer = self.log
        else:
            await _answer(send, 404, b"no such hint", [])
            return
        await _answer(
            send, 200, json.dumps(answer).encode(), [(b"content-type", b"application/json")]
        )


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = Hints(composition_app.app)
