"""``python -m tests.browser.typed_server PORT DIST [--changed]``: the ClawPanel example's bundle
beside a livepanel endpoint, for the typed dashboard's browser test.

Serves ``DIST`` (the example built with ``npm run build``) at ``/``, the endpoint at ``/ws``
behind Basic Auth, and ``POST /publish`` (``{"type", "payload"}``) for the test to broadcast.
``--changed`` is the next deploy: its event types differ from the bundle's (one more type
with a field the bundle does not know), so its schema fingerprint does too.
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
from typing import Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import livepanel.events.builtin  # noqa: F401 - the ClawPanel types the bundle was built on
from livepanel import BasicAuth, LivePanelMiddleware, broadcast_event, event_type

USER, PASSWORD = "operator", "correct horse:battery"


def _verify(user: str, password: str) -> bool:
    return secrets.compare_digest(user, USER) and secrets.compare_digest(password, PASSWORD)


async def publish(request: Request) -> JSONResponse:
    body = await request.json()
    event = broadcast_event(body["type"], body["payload"])
    return JSONResponse({"id": event.id})


def app(dist: str, changed: bool) -> LivePanelMiddleware:
    if changed:

        @event_type("deploy.finished")
        @dataclasses.dataclass(frozen=True)
        class DeployFinished:
            service: str
            outcome: Literal["ok", "failed"]

    site = Starlette(
        routes=[
            Route("/publish", publish, methods=["POST"]),
            Mount("/", StaticFiles(directory=dist, html=True)),
        ]
    )
    return LivePanelMiddleware(site, path="/ws", auth=BasicAuth(_verify), shutdown_signals=())


if __name__ == "__main__":
    port, dist = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(
        app(dist, "--changed" in sys.argv), host="127.0.0.1", port=port, log_level="warning"
    )
