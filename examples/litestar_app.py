"""livepanel in Litestar, mounted as an ASGI route handler at /ws.

Run:  DASHBOARD_USERNAME=admin DASHBOARD_PASSWORD=secret uvicorn examples.litestar_app:app
"""

import uuid

from litestar import Litestar, asgi, post
from litestar.params import FromPath
from litestar.types import Receive, Scope, Send

from livepanel import BasicAuth, LivePanelApp, broadcast_event
from livepanel.events import SessionCreated, SessionKilled

endpoint = LivePanelApp(auth=BasicAuth.from_env())


@asgi("/ws", is_mount=True, copy_scope=True)
async def livepanel_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    await endpoint(scope, receive, send)  # type: ignore[arg-type]


@post("/api/sessions/spawn", sync_to_thread=True)
def spawn_session() -> dict[str, str]:
    key = f"session-{uuid.uuid4().hex[:8]}"
    broadcast_event(SessionCreated(session_key=key, agent_id="main", kind="direct"))
    return {"sessionKey": key}


@post("/api/sessions/{key:str}/kill")
async def kill_session(key: FromPath[str]) -> dict[str, str]:
    broadcast_event(SessionKilled(session_key=key, agent_id="main"))
    return {"sessionKey": key}


app = Litestar(route_handlers=[livepanel_endpoint, spawn_session, kill_session])
