"""livepanel in Quart, through the middleware around Quart's ASGI app.

Run:  DASHBOARD_USERNAME=admin DASHBOARD_PASSWORD=secret uvicorn examples.quart_app:app
"""

import uuid

from quart import Quart

from livepanel import BasicAuth, LivePanelMiddleware, broadcast_event
from livepanel.events import SessionCreated, SessionKilled

app = Quart(__name__)
app.asgi_app = LivePanelMiddleware(app.asgi_app, path="/ws", auth=BasicAuth.from_env())  # type: ignore[method-assign]
started = []


@app.before_serving
async def startup() -> None:
    started.append("quart")  # lifespan still reaches Quart through the middleware


@app.get("/api/health")
async def health() -> dict[str, object]:
    return {"ok": True, "started": started}


@app.post("/api/sessions/spawn")
def spawn_session() -> dict[str, str]:
    """A sync view: Quart runs it in a thread."""
    key = f"session-{uuid.uuid4().hex[:8]}"
    broadcast_event(SessionCreated(session_key=key, agent_id="main", kind="direct"))
    return {"sessionKey": key}


@app.post("/api/sessions/<key>/kill")
async def kill_session(key: str) -> dict[str, str]:
    broadcast_event(SessionKilled(session_key=key, agent_id="main"))
    return {"sessionKey": key}
