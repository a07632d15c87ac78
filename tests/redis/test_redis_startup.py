"""A process that only publishes still reaches Redis; a dashboard gets 503 while it is down."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from livepanel import BasicAuth, Broadcaster, LivePanelApp, LivePanelMiddleware
from livepanel.backends.redis import DEFAULT_STREAM
from tests.redis.redis_helpers import RedisServer, Tick, run, wait_until
from tests.servers import run_server

pytestmark = pytest.mark.redis
AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}


def stream_length(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.xlen(DEFAULT_STREAM))


def test_publish_inside_a_loop_starts_the_broadcaster_and_reaches_redis(redis_url: str) -> None:
    """publish() from a coroutine, with no subscriber anywhere, still lands in the stream."""
    broadcaster = Broadcaster(redis_url)

    async def main() -> None:
        for n in range(3):
            broadcaster.publish(Tick(n=n))
        await wait_until(lambda: stream_length(redis_url) == 3, what="3 entries in the stream")
        await broadcaster.close()

    run(main())


def test_sync_handler_behind_the_middleware_reaches_redis_without_any_dashboard(
    redis_url: str, server_logs: Any
) -> None:
    """A sync REST handler (a worker thread) publishes; the middleware has started the backend."""
    broadcaster = Broadcaster(redis_url)

    def spawn(request: Request) -> JSONResponse:
        broadcaster.publish(Tick(n=7))
        return JSONResponse({"ok": True})

    host = Starlette(routes=[Route("/spawn", spawn, methods=["POST"])])
    app = LivePanelMiddleware(host, path="/ws", broadcaster=broadcaster, auth=None)
    with run_server(app, "uvicorn-wsproto") as server:
        for _ in range(2):
            assert httpx.post(server.http_url + "/spawn", timeout=5).is_success
        run(wait_until(lambda: stream_length(redis_url) == 2, what="2 entries in the stream"))
    assert server_logs.errors() == []


def test_dashboard_gets_503_while_redis_is_down_and_connects_once_it_is_back(
    redis_server: RedisServer, server_logs: Any
) -> None:
    """A handshake while Redis is down is refused with 503, without a traceback; later it works."""
    broadcaster = Broadcaster(redis_server.url)
    app = LivePanelApp(broadcaster, auth=BasicAuth(lambda u, p: (u, p) == ("admin", "pw")))
    redis_server.kill()
    with run_server(app, "uvicorn-websockets") as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(server.ws_url + "/ws", additional_headers=AUTH, open_timeout=10)
        assert refused.value.response.status_code == 503
        assert json.loads(refused.value.response.body)["error"] == "unavailable"
        redis_server.start()
        with connect(server.ws_url + "/ws", additional_headers=AUTH, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
    assert server_logs.errors() == []


def test_lifespan_startup_survives_redis_being_down(redis_server: RedisServer) -> None:
    """LivePanelApp's lifespan starts the backend, and only warns when Redis is down."""
    broadcaster = Broadcaster(redis_server.url)
    app = LivePanelApp(broadcaster, auth=None)
    redis_server.kill()
    messages = iter([{"type": "lifespan.startup"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> Any:
        try:
            return next(messages)
        except StopIteration:
            await asyncio.sleep(3600)

    async def send(message: Any) -> None:
        sent.append(message)

    async def main() -> None:
        task = asyncio.ensure_future(app({"type": "lifespan"}, receive, send))  # type: ignore[arg-type]
        await wait_until(lambda: bool(sent), timeout=15, what="lifespan startup answer")
        task.cancel()

    run(main())
    assert sent == [{"type": "lifespan.startup.complete"}]
