"""The app each worker process of the multi-process tests runs.

``uvicorn tests.redis.redis_worker_app:create_app --factory`` (from the repository) with
``LIVEPANEL_BACKEND_URL=redis://...``: the default broadcaster on Redis, the
livepanel endpoint at ``/ws/``, its health checks at ``/healthz`` and ``/livez``, and
``POST /publish?start=N&count=M`` that publishes ``Tick(N) .. Tick(N+M-1)`` from this
process and answers their ids (``&kind=session.created`` or ``session.killed``: the
sessions ``s<N>`` .. instead).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import livepanel.events.builtin  # noqa: F401 - it publishes and reads the session types
from livepanel import LivePanelApp, get_broadcaster, health_app
from tests.redis.redis_helpers import Tick


def create_app() -> Starlette:
    broadcaster = get_broadcaster()
    stall_after = float(os.environ.get("TEST_STALL_AFTER", "5"))

    async def publish(request: Request) -> JSONResponse:
        start = int(request.query_params.get("start", "0"))
        count = int(request.query_params.get("count", "1"))
        kind = request.query_params.get("kind")
        if kind in ("session.created", "session.killed"):
            extra = {"kind": "direct"} if kind == "session.created" else {}
            ids = [
                (
                    await broadcaster.apublish(
                        kind, {"sessionKey": f"s{n}", "agentId": "a", **extra}
                    )
                ).id
                for n in range(start, start + count)
            ]
            return JSONResponse({"ids": ids})
        ids = [(await broadcaster.apublish(Tick(n=n))).id for n in range(start, start + count)]
        return JSONResponse({"ids": ids})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"pid": os.getpid(), "stats": broadcaster.stats()})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await broadcaster.start()  # every worker reads and writes from startup on
        yield
        await broadcaster.close()

    return Starlette(
        routes=[
            Route("/publish", publish, methods=["POST"]),
            Route("/health", health),
            # livepanel's own check; TEST_STALL_AFTER shortens its stall threshold
            Route("/healthz", health_app(broadcaster, stall_after=stall_after)),
            Route("/livez", health_app(broadcaster, stall_after=stall_after, liveness=True)),
            Mount("/ws", LivePanelApp(broadcaster, auth=None)),
        ],
        lifespan=lifespan,
    )
