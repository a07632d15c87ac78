"""livepanel in Starlette, authenticated by the host app's own session cookie.

Log in once (POST /login with Basic credentials); the WebSocket handshake then
carries Starlette's signed session cookie, which browsers send on their own.

Run:  DASHBOARD_USERNAME=admin DASHBOARD_PASSWORD=secret SESSION_SECRET=change-me \
      uvicorn examples.starlette_app:app
"""

import os
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from livepanel import BasicAuth, LivePanelApp, broadcast_event
from livepanel.events import SessionCreated, SessionKilled

basic = BasicAuth.from_env()


class SessionUser:
    """An Authenticator: the user SessionMiddleware decoded from the signed cookie."""

    async def __call__(self, scope: Any) -> str | None:
        return scope.get("session", {}).get("user")


async def login(request: Request) -> JSONResponse:
    user = await basic(request.scope)  # the same Basic check, once, for the cookie
    if not user:
        return JSONResponse({"error": "unauthorized"}, 401, {"WWW-Authenticate": basic.challenge})
    request.session["user"] = user
    return JSONResponse({"user": user})


def spawn(request: Request) -> JSONResponse:
    key = f"session-{uuid.uuid4().hex[:8]}"
    broadcast_event(SessionCreated(session_key=key, agent_id="main", kind="direct"))
    return JSONResponse({"sessionKey": key})


async def kill(request: Request) -> JSONResponse:
    key = request.path_params["key"]
    broadcast_event(SessionKilled(session_key=key, agent_id="main"))
    return JSONResponse({"sessionKey": key})


app = Starlette(
    routes=[
        Route("/login", login, methods=["POST"]),
        Route("/api/sessions/spawn", spawn, methods=["POST"]),
        Route("/api/sessions/{key}/kill", kill, methods=["POST"]),
        Mount("/ws", LivePanelApp(auth=SessionUser())),  # served at /ws/
    ],
    middleware=[Middleware(SessionMiddleware, secret_key=os.environ["SESSION_SECRET"])],
)
