"""Mounted in FastAPI and Starlette without lifespan wiring, as a sub-app and as middleware."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.sync.client import ClientConnection, connect

from livepanel import BasicAuth, LivePanelApp, LivePanelMiddleware, broadcast_event
from livepanel.events import SessionCreated, SessionKilled
from tests.servers import run_server

CREDENTIALS = ("admin", "pa:ss")
HEADERS = {"Authorization": "Basic " + base64.b64encode(b"admin:pa:ss").decode()}


def auth() -> BasicAuth:
    return BasicAuth(lambda u, p: (u, p) == CREDENTIALS)


def receive(ws: ClientConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame of type ``kind``, skipping heartbeats."""
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame["type"] == kind:
            return frame
        assert frame["type"] in ("welcome", "ping"), frame


def fastapi_app(mode: str, started: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        started.append("host app")
        yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/api/sessions/spawn")
    def spawn() -> dict[str, str]:  # sync: FastAPI runs it in a worker thread
        broadcast_event(SessionCreated(session_key="s1", agent_id="a1", kind="direct"))
        return {"ok": "spawned"}

    @app.post("/api/sessions/kill")
    async def kill() -> dict[str, str]:  # async: runs on the event loop
        broadcast_event(SessionKilled(session_key="s1", agent_id="a1"))
        return {"ok": "killed"}

    if mode == "mount":
        app.mount("/ws", LivePanelApp(auth=auth()))
    else:
        app.add_middleware(LivePanelMiddleware, path="/ws", auth=auth())
    return app


def starlette_app(mode: str, started: list[str]) -> Starlette:
    def spawn(request: Request) -> JSONResponse:
        broadcast_event(SessionCreated(session_key="s1", agent_id="a1", kind="direct"))
        return JSONResponse({"ok": "spawned"})

    async def kill(request: Request) -> JSONResponse:
        broadcast_event(SessionKilled(session_key="s1", agent_id="a1"))
        return JSONResponse({"ok": "killed"})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        started.append("host app")
        yield

    from starlette.middleware import Middleware
    from starlette.routing import Mount

    routes: list[Any] = [
        Route("/api/sessions/spawn", spawn, methods=["POST"]),
        Route("/api/sessions/kill", kill, methods=["POST"]),
    ]
    middleware = []
    if mode == "mount":
        routes.append(Mount("/ws", LivePanelApp(auth=auth())))
    else:
        middleware.append(Middleware(LivePanelMiddleware, path="/ws", auth=auth()))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


FRAMEWORKS: dict[str, Callable[[str, list[str]], Any]] = {
    "fastapi": fastapi_app,
    "starlette": starlette_app,
}
ENDPOINT = {"mount": "/ws/", "middleware": "/ws"}


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("mode", ["mount", "middleware"])
def test_rest_handlers_broadcast_to_the_mounted_endpoint(
    framework: str, mode: str, server_logs: Any
) -> None:
    """Sync and async REST handlers reach a WebSocket client, with no lifespan wiring."""
    started: list[str] = []
    app = FRAMEWORKS[framework](mode, started)
    with run_server(app, "uvicorn-websockets", lifespan=True) as server:
        url = server.ws_url + ENDPOINT[mode]
        with connect(url, additional_headers=HEADERS, open_timeout=5) as ws:
            receive(ws, "welcome")
            spawned = httpx.post(server.http_url + "/api/sessions/spawn", timeout=5)
            assert spawned.status_code == 200
            event = receive(ws, "session.created")
            assert event["payload"] == {"sessionKey": "s1", "agentId": "a1", "kind": "direct"}
            killed = httpx.post(server.http_url + "/api/sessions/kill", timeout=5)
            assert killed.status_code == 200
            assert receive(ws, "session.killed")["payload"]["sessionKey"] == "s1"
    assert started == ["host app"]
    assert server_logs.errors() == []


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_middleware_serves_exactly_the_path_and_passes_the_rest(framework: str) -> None:
    """The middleware answers /ws and /ws/ itself; other paths reach the host app."""
    app = FRAMEWORKS[framework]("middleware", [])
    with run_server(app, "uvicorn-websockets", lifespan=True) as server:
        for path in ("/ws", "/ws/"):
            answer = httpx.get(server.http_url + path, headers=HEADERS, timeout=5)
            assert answer.status_code == 426, path
            assert answer.json()["error"] == "upgrade_required"
        assert httpx.get(server.http_url + "/ws", timeout=5).status_code == 401
        assert httpx.post(server.http_url + "/api/sessions/spawn", timeout=5).status_code == 200
        assert httpx.get(server.http_url + "/wsx", timeout=5).status_code == 404
        with connect(server.ws_url + "/ws/", additional_headers=HEADERS, open_timeout=5) as ws:
            receive(ws, "welcome")


def test_mounted_sub_app_without_credentials_is_refused_with_401() -> None:
    """A sub-app mount keeps the handshake checks: no credentials, no connection."""
    app = fastapi_app("mount", [])
    with run_server(app, "uvicorn-wsproto", lifespan=True) as server:
        answer = httpx.get(server.http_url + "/ws/", timeout=5)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith('Basic realm="livepanel"')
