"""The app each worker process of the PostgreSQL multi-worker tests runs.

``uvicorn tests.postgres.pg_worker_app:create_app --factory`` with
``LIVEPANEL_BACKEND_URL=postgresql://...`` and ``LIVEPANEL_TICKET_SECRET``: the default
broadcaster on PostgreSQL, the endpoint at ``/ws/`` accepting admin's Basic credentials or
a ticket, ``POST /publish?start=N&count=M`` (``Tick(N) .. Tick(N+M-1)``, answering their
ids), ``POST /disconnect?user=U`` (revocation, answering how many it closed here) and
``GET /health``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from livepanel import AnyOf, LivePanelApp, TicketAuth, Tickets, get_broadcaster
from tests.integration.helpers import admin_only
from tests.redis.redis_helpers import Tick


def create_app() -> Starlette:
    broadcaster = get_broadcaster()
    tickets = Tickets.from_env(broadcaster=broadcaster, workers=2)
    auth = AnyOf(admin_only(), TicketAuth(tickets))

    async def publish(request: Request) -> JSONResponse:
        start = int(request.query_params.get("start", "0"))
        count = int(request.query_params.get("count", "1"))
        ids = [(await broadcaster.apublish(Tick(n=n))).id for n in range(start, start + count)]
        return JSONResponse({"ids": ids})

    async def disconnect(request: Request) -> JSONResponse:
        closed = await broadcaster.disconnect(user=request.query_params["user"])
        return JSONResponse({"closed": closed})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"pid": os.getpid(), "stats": broadcaster.stats()})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await broadcaster.start()
        yield
        await broadcaster.close()

    return Starlette(
        routes=[
            Route("/publish", publish, methods=["POST"]),
            Route("/disconnect", disconnect, methods=["POST"]),
            Route("/health", health),
            Mount("/ws", LivePanelApp(broadcaster, auth=auth)),
        ],
        lifespan=lifespan,
    )
