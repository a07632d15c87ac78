"""livepanel in FastAPI: the endpoint at /ws, REST handlers that broadcast.

Run:  DASHBOARD_USERNAME=admin DASHBOARD_PASSWORD=secret uvicorn examples.fastapi_app:app
"""

import uuid

from fastapi import FastAPI

from livepanel import BasicAuth, LivePanelMiddleware, broadcast_event
from livepanel.events import SessionCreated, SessionKilled

app = FastAPI(title="ClawPanel")
app.add_middleware(LivePanelMiddleware, path="/ws", auth=BasicAuth.from_env())


@app.post("/api/sessions/spawn")
def spawn_session(agent_id: str = "main") -> dict[str, str]:
    """A sync handler: FastAPI runs it in a worker thread; publish() is thread-safe."""
    key = f"session-{uuid.uuid4().hex[:8]}"
    broadcast_event(SessionCreated(session_key=key, agent_id=agent_id, kind="direct"))
    return {"sessionKey": key}


@app.post("/api/sessions/{key}/kill")
async def kill_session(key: str, agent_id: str = "main") -> dict[str, str]:
    """An async handler, on the event loop."""
    broadcast_event(SessionKilled(session_key=key, agent_id=agent_id))
    return {"sessionKey": key}
