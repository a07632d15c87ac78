"""A worker of the presence tests.

``uvicorn tests.ops.presence_worker_app:create_app --factory`` with
``LIVEPANEL_BACKEND_URL=redis://...``: the endpoint at ``/ws/`` behind Basic Auth that
takes any user name (the password is not checked), presence tracked with
``announce=True`` and ``TEST_PRESENCE_EXPIRY`` seconds of expiry, ``GET /presence``
and ``GET /health``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from livepanel import BasicAuth, LivePanelApp, get_broadcaster
from livepanel.presence import track


def create_app() -> Starlette:
    broadcaster = get_broadcaster()
    track(broadcaster, announce=True, expiry=float(os.environ.get("TEST_PRESENCE_EXPIRY", "15")))

    async def presence(request: Request) -> JSONResponse:
        return JSONResponse(await broadcaster.presence())

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"pid": os.getpid()})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await broadcaster.start()
        yield
        await broadcaster.close()

    return Starlette(
        routes=[
            Route("/presence", presence),
            Route("/health", health),
            Mount("/ws", LivePanelApp(broadcaster, auth=BasicAuth(lambda user, password: user))),
        ],
        lifespan=lifespan,
    )
