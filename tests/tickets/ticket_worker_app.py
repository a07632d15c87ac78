"""The app each worker process of the cross-worker ticket tests runs.

``uvicorn tests.tickets.ticket_worker_app:create_app --factory`` with
``LIVEPANEL_BACKEND_URL=redis://...`` and ``LIVEPANEL_TICKET_SECRET``: the
default broadcaster on Redis, the livepanel endpoint at ``/ws/`` accepting
admin's Basic credentials or a ticket, and ``GET /health``.
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


def create_app() -> Starlette:
    broadcaster = get_broadcaster()
    auth = AnyOf(admin_only(), TicketAuth(Tickets.from_env()))

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"pid": os.getpid(), "stats": broadcaster.stats()})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await broadcaster.start()
        yield
        await broadcaster.close()

    return Starlette(
        routes=[Route("/health", health), Mount("/ws", LivePanelApp(broadcaster, auth=auth))],
        lifespan=lifespan,
    )
