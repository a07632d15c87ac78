"""Every example starts on a real server, and a REST call reaches a WebSocket client."""

from __future__ import annotations

import base64
import importlib
import json
import sys
import time
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.servers import run_server

USER, PASSWORD = "admin", "s3cret:pass"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_USERNAME", USER)
    monkeypatch.setenv("DASHBOARD_PASSWORD", PASSWORD)
    monkeypatch.setenv("SESSION_SECRET", "test-secret")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "examples.django_asgi.settings")


def load(module: str) -> Any:
    """Import an example afresh, so it reads this test's environment."""
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        del sys.modules[name]
    return importlib.import_module(module)


def next_event(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next broadcast event, skipping welcome and heartbeats."""
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if "id" in frame:
            return frame
        assert frame["type"] in ("welcome", "ping"), frame


def spawn_and_kill(http: httpx.Client, ws: ClientConnection) -> None:
    spawned = http.post("/api/sessions/spawn")
    assert spawned.is_success, spawned.text
    key = spawned.json()["sessionKey"]
    created = next_event(ws)
    assert created["type"] == "session.created"
    assert created["payload"]["sessionKey"] == key
    killed = http.post(f"/api/sessions/{key}/kill")
    assert killed.is_success, killed.text
    gone = next_event(ws)
    assert (gone["type"], gone["payload"]["sessionKey"]) == ("session.killed", key)


@pytest.mark.parametrize(
    ("module", "ws_path"),
    [("examples.fastapi_app", "/ws"), ("examples.litestar_app", "/ws")],
)
def test_basic_auth_example_broadcasts_from_sync_and_async_handlers(
    module: str, ws_path: str, server_logs: Any
) -> None:
    """FastAPI and Litestar: Basic Auth on the socket, sync and async handlers broadcast."""
    app = load(module).app
    with run_server(app, "uvicorn-websockets", lifespan=True) as server:
        with (
            httpx.Client(base_url=server.http_url, timeout=5) as http,
            connect(server.ws_url + ws_path, additional_headers=BASIC, open_timeout=5) as ws,
        ):
            spawn_and_kill(http, ws)
    assert server_logs.errors() == []


def test_quart_example_keeps_lifespan_and_http_through_the_middleware(server_logs: Any) -> None:
    """Quart behind LivePanelMiddleware still gets its lifespan and its HTTP routes."""
    app = load("examples.quart_app").app
    with run_server(app, "hypercorn", lifespan=True) as server:
        with (
            httpx.Client(base_url=server.http_url, timeout=5) as http,
            connect(server.ws_url + "/ws", additional_headers=BASIC, open_timeout=5) as ws,
        ):
            assert http.get("/api/health").json() == {"ok": True, "started": ["quart"]}
            spawn_and_kill(http, ws)
    assert server_logs.errors() == []


def test_starlette_example_authenticates_with_the_host_session_cookie(server_logs: Any) -> None:
    """Starlette: the socket accepts the host app's signed session cookie after /login."""
    app = load("examples.starlette_app").app
    with run_server(app, "uvicorn-wsproto", lifespan=True) as server:
        with httpx.Client(base_url=server.http_url, timeout=5) as http:
            refused = http.get("/ws/")
            assert refused.status_code == 401
            assert http.post("/login", headers={"Authorization": "Basic eDp5"}).status_code == 401
            assert http.post("/login", headers=BASIC).status_code == 200
            cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
            with connect(
                server.ws_url + "/ws/", additional_headers={"Cookie": cookie}, open_timeout=5
            ) as ws:
                spawn_and_kill(http, ws)
    assert server_logs.errors() == []


def test_django_example_authenticates_with_the_django_session(server_logs: Any) -> None:
    """Django behind LivePanelMiddleware: its views broadcast, its session authenticates."""
    app = load("examples.django_asgi.asgi").application
    with run_server(app, "uvicorn-websockets", lifespan="off") as server:
        with httpx.Client(base_url=server.http_url, timeout=5) as http:
            assert http.get("/ws").status_code == 401
            wrong = http.post("/login", json={"username": USER, "password": "nope"})
            assert wrong.status_code == 401
            assert http.post("/login", json={"username": USER, "password": PASSWORD}).is_success
            cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
            with connect(
                server.ws_url + "/ws", additional_headers={"Cookie": cookie}, open_timeout=5
            ) as ws:
                spawn_and_kill(http, ws)
    assert server_logs.errors() == []
