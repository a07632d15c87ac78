"""The app each worker of the receipts tests runs: Basic auth that accepts any password
(the user is the username), the endpoint at ``/ws/``, and ``POST /publish?n=N&confirm=C&within=S``
that publishes ``Tick(N)`` with ``apublish(confirm=C, within=S)`` and answers the event's id,
the receipt and how long the call took.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from livepanel import BasicAuth, LivePanelApp, get_broadcaster
from tests.redis.redis_helpers import Tick


def create_app() -> Starlette:
    broadcaster = get_broadcaster()

    async def publish(request: Request) -> JSONResponse:
        n = int(request.query_params["n"])
        confirm = int(request.query_params.get("confirm", "0"))
        within = float(request.query_params.get("within", "5"))
        started = time.monotonic()
        event = await broadcaster.apublish(Tick(n=n), confirm=confirm, within=within)
        elapsed = time.monotonic() - started
        assert event.id is not None
        receipt = await broadcaster.receipts(event.id)
        return JSONResponse(
            {
                "id": event.id,
                "elapsed": elapsed,
                "users": sorted(receipt.users),
                "connections": receipt.connections,
            }
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await broadcaster.start()
        yield
        await broadcaster.close()

    return Starlette(
        routes=[
            Route("/publish", publish, methods=["POST"]),
            Route("/health", lambda request: JSONResponse({"ok": True})),
            Mount("/ws", LivePanelApp(broadcaster, auth=BasicAuth(lambda user, password: user))),
        ],
        lifespan=lifespan,
    )
