"""Every integration point takes what the user mounted: the ``LivePanelMiddleware`` of the
Quickstart as well as a ``LivePanelApp`` (or the broadcaster itself).

``metrics.instrument(broadcaster, app=...)``, ``health_app(...)``,
``Tickets(..., broadcaster=...)`` and ``presence.track(...)`` each get the
middleware, on real servers where a socket is crossed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

pytest.importorskip("prometheus_client")

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from livepanel import (
    Broadcaster,
    ConfigurationError,
    LivePanelApp,
    LivePanelMiddleware,
    Tickets,
    get_broadcaster,
    health_app,
    set_broadcaster,
)
from livepanel.asgi import endpoint_of
from livepanel.metrics import instrument
from livepanel.mounting import broadcaster_of
from livepanel.presence import track
from tests.integration.helpers import TIMEOUT, admin_only, expect_welcome, open_ws, refusal
from tests.ops.test_metrics import scrape, value
from tests.redis.redis_helpers import run
from tests.servers import run_server


def metrics_route(registry: CollectorRegistry) -> Route:
    def metrics(request: Request) -> Response:  # sync: Starlette runs it in a thread
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return Route("/metrics", metrics)


@pytest.mark.parametrize("mounted", ["LivePanelMiddleware(app)", "add_middleware(endpoint=)"])
def test_metrics_of_the_middleware_count_handshakes(mounted: str) -> None:
    """instrument(broadcaster, app=<the middleware>, or the endpoint given to add_middleware):
    /metrics answers 200 with the handshakes the endpoint answered."""
    broadcaster = Broadcaster()
    registry = CollectorRegistry()
    if mounted == "LivePanelMiddleware(app)":
        host = Starlette(routes=[metrics_route(registry)])
        app: Any = LivePanelMiddleware(host, broadcaster=broadcaster, auth=admin_only())
        instrument(broadcaster, app=app, registry=registry)
    else:
        app = FastAPI()
        app.router.routes.append(metrics_route(registry))
        endpoint = LivePanelApp(broadcaster, auth=admin_only())
        app.add_middleware(LivePanelMiddleware, path="/ws", endpoint=endpoint)
        instrument(broadcaster, app=endpoint, registry=registry)
    with run_server(app, "uvicorn-websockets") as server:
        with open_ws(server) as ws:
            expect_welcome(ws)
        refusal(server, headers=None)
        samples = scrape(server)  # a 500 would raise
    assert value(samples, "livepanel_handshakes_total", status="101") == 1
    assert value(samples, "livepanel_handshakes_total", status="401") == 1


def test_instrument_refuses_what_serves_no_endpoint_at_once() -> None:
    """Handing instrument() the host app is a TypeError when it is called, not a 500 on
    every scrape."""
    with pytest.raises(TypeError, match="LivePanelApp or a LivePanelMiddleware"):
        instrument(Broadcaster(), app=FastAPI(), registry=CollectorRegistry())  # type: ignore[arg-type]


def test_the_middleware_hands_over_its_endpoint_and_broadcaster() -> None:
    """middleware.endpoint is the LivePanelApp it serves; endpoint_of() and broadcaster_of()
    answer the same for the middleware, the app and the broadcaster."""
    broadcaster = Broadcaster()
    endpoint = LivePanelApp(broadcaster, auth=None)
    middleware = LivePanelMiddleware(FastAPI(), endpoint=endpoint)
    assert middleware.endpoint is endpoint_of(middleware) is endpoint_of(endpoint) is endpoint
    assert broadcaster_of(middleware) is broadcaster_of(endpoint) is broadcaster
    assert broadcaster_of(broadcaster) is broadcaster


def test_a_middleware_on_the_default_broadcaster_follows_it() -> None:
    """Without a broadcaster of its own, the middleware's is the default one, looked up at
    each use: set_broadcaster() later is followed by health and tickets."""
    middleware = LivePanelMiddleware(FastAPI(), auth=None)
    health = health_app(middleware)
    tickets = Tickets("t" * 32, broadcaster=middleware)
    assert health.broadcaster is tickets.broadcaster is get_broadcaster()
    replaced = Broadcaster()
    set_broadcaster(replaced)
    assert health.broadcaster is tickets.broadcaster is replaced


def test_the_middleware_takes_either_its_endpoint_or_the_arguments_of_one() -> None:
    """endpoint= and LivePanelApp's arguments together, or neither, are configuration errors
    that say what to pass."""
    with pytest.raises(ConfigurationError, match="not both"):
        LivePanelMiddleware(FastAPI(), endpoint=LivePanelApp(auth=None), auth=None)
    with pytest.raises(
        ConfigurationError, match=r"auth=BasicAuth\.from_env\(\).*endpoint=LivePanelApp"
    ):
        LivePanelMiddleware(FastAPI())


def test_health_app_of_the_middleware_answers_for_its_endpoint() -> None:
    """health_app(<the middleware>) on a real server: 200 while it serves, 503 draining once
    its endpoint shuts down."""
    broadcaster = Broadcaster()
    middleware = LivePanelMiddleware(
        FastAPI(), broadcaster=broadcaster, auth=admin_only(), shutdown_signals=()
    )
    app = Starlette(routes=[Route("/healthz", health_app(middleware))])
    with (
        run_server(app, "uvicorn-websockets") as server,
        httpx.Client(base_url=server.http_url, timeout=TIMEOUT, trust_env=False) as http,
    ):
        serving = http.get("/healthz")
        assert serving.status_code == 200, serving.text
        run(middleware.endpoint.shutdown(timeout=1))  # no connection to wait for
        draining = http.get("/healthz")
    assert draining.status_code == 503
    assert json.loads(draining.text)["draining"] is True


def test_presence_tracks_the_middlewares_connections() -> None:
    """track(<the middleware>) counts the users of its endpoint's connections."""
    broadcaster = Broadcaster()
    middleware = LivePanelMiddleware(FastAPI(), broadcaster=broadcaster, auth=admin_only())
    tracker = track(middleware)
    assert tracker.broadcaster is broadcaster
    with run_server(middleware, "uvicorn-websockets") as server, open_ws(server) as ws:
        expect_welcome(ws)
        loop = broadcaster.backend_loop
        assert loop is not None
        view = asyncio.run_coroutine_threadsafe(broadcaster.presence(), loop).result(TIMEOUT)
    assert view == {"users": [{"user": "admin", "connections": 1}], "connections": 1}


def test_tickets_of_the_middleware_are_single_use() -> None:
    """Tickets(..., broadcaster=<the middleware>) remember used nonces in its broadcaster's
    backend: a ticket is redeemed once."""
    middleware = LivePanelMiddleware(FastAPI(), broadcaster=Broadcaster(), auth=None)
    tickets = Tickets("t" * 32, broadcaster=middleware)
    text = tickets.issue("alice", audiences=["team:ops"])

    async def twice() -> tuple[Any, Any]:
        return await tickets.redeem(text), await tickets.redeem(text)

    first, second = run(twice())
    assert first is not None
    assert first.user == "alice"
    assert second is None
