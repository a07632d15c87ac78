"""Quickstart: a FastAPI app whose page lists livepanel events as they happen.

Run, in this folder:
    DASHBOARD_USERNAME=admin DASHBOARD_PASSWORD=secret uvicorn app:app
then open http://127.0.0.1:8000/ and log in as admin / secret.
"""

import uuid
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from livepanel import BasicAuth, LivePanelMiddleware, broadcast_event
from livepanel.assets import ScriptApp
from livepanel.events import SessionCreated

# one login for the page, the REST API and the WebSocket (fails at start if unset)
auth = BasicAuth.from_env()

app = FastAPI()
# the WebSocket endpoint at exactly /ws
app.add_middleware(LivePanelMiddleware, path="/ws", auth=auth)
# the browser client, livepanel.js, shipped inside the package
app.add_route("/livepanel.js", ScriptApp())


async def login(request: Request) -> str:
    """The same Basic Auth as the endpoint, for the page and the API."""
    user = await auth(request.scope)
    if not user:
        raise HTTPException(401, headers={"WWW-Authenticate": auth.challenge})
    return str(user)


@app.get("/", response_class=HTMLResponse)
def page(user: str = Depends(login)) -> str:
    return (Path(__file__).parent / "index.html").read_text(encoding="utf-8")


@app.post("/api/sessions/spawn")
def spawn_session(agent: str = "atlas", user: str = Depends(login)) -> dict[str, str]:
    """Your business code: do the work, then tell every open dashboard."""
    key = f"session-{uuid.uuid4().hex[:8]}"
    broadcast_event(SessionCreated(session_key=key, agent_id=agent, kind="direct"))
    return {"sessionKey": key}
