"""Connect tickets in FastAPI: a single-page app with its own login connects with tickets.

The page logs in with a form (a session cookie), then asks ``POST
/api/livepanel-ticket`` for a fresh ticket before every (re)connection:
``livepanel.js``'s ``ticket`` option. Scripts keep using Basic credentials on
the same endpoint (``AnyOf``).

Run::

    export LIVEPANEL_TICKET_SECRET=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
    export SESSION_SECRET=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
    DASHBOARD_USERNAME=admin DASHBOARD_PASSWORD=secret uvicorn examples.tickets.app:app

and open http://127.0.0.1:8000/. Behind TLS in production: the session cookie
is then ``Secure`` (``HTTPS_ONLY=1``).
"""

from __future__ import annotations

import hmac
import os
import uuid

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.middleware.sessions import SessionMiddleware

from livepanel import (
    AnyOf,
    BasicAuth,
    LivePanelMiddleware,
    TicketAuth,
    Tickets,
    broadcast_event,
)
from livepanel.assets import ScriptApp
from livepanel.events import SessionCreated

USERNAME = os.environ["DASHBOARD_USERNAME"]
PASSWORD = os.environ["DASHBOARD_PASSWORD"]
TEAMS = {USERNAME: "ops"}  # your user store: who belongs to which team

tickets = Tickets.from_env()  # LIVEPANEL_TICKET_SECRET, the same in every worker
app = FastAPI(title="livepanel tickets example")
app.add_middleware(
    SessionMiddleware,
    secret_key=os.environ["SESSION_SECRET"],
    same_site="strict",  # the ticket endpoint is never called with the cookie from another site
    https_only=os.environ.get("HTTPS_ONLY") == "1",
)


class Login(BaseModel):
    username: str
    password: str


def current_user(request: Request) -> str:
    """The logged-in user of the session cookie, or 401."""
    user = request.session.get("user")
    if not isinstance(user, str):
        raise HTTPException(status_code=401, detail="log in first")
    return user


@app.post("/login")
def login(form: Login, request: Request) -> dict[str, str]:
    user_ok = hmac.compare_digest(form.username.encode(), USERNAME.encode())
    password_ok = hmac.compare_digest(form.password.encode(), PASSWORD.encode())
    if not (user_ok & password_ok):
        raise HTTPException(status_code=401, detail="wrong username or password")
    request.session["user"] = form.username
    return {"user": form.username}


@app.post("/logout")
def logout(request: Request) -> dict[str, bool]:
    request.session.clear()  # the next ticket request is refused: the page stops reconnecting
    return {"ok": True}


@app.post("/api/livepanel-ticket")
def livepanel_ticket(user: str = Depends(current_user)) -> dict[str, str]:
    """A ticket for the session's user: valid 30 s, once, on any worker."""
    audiences = [f"team:{TEAMS[user]}", f"user:{user}"]
    return {"ticket": tickets.issue(user, audiences=audiences)}


@app.post("/api/sessions/spawn")
def spawn_session(user: str = Depends(current_user)) -> dict[str, str]:
    key = f"session-{uuid.uuid4().hex[:8]}"
    broadcast_event(SessionCreated(session_key=key, agent_id="main", kind="direct"))
    return {"sessionKey": key}


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>livepanel tickets</title>
<form id="login">
  <input name="username" placeholder="user"> <input name="password" type="password">
  <button>Log in</button>
</form>
<p>Status: <output id="status">logged out</output></p>
<ul id="events"></ul>
<script type="module">
  import { connect } from "/livepanel.js";

  async function ticket() {
    const response = await fetch("/api/livepanel-ticket", { method: "POST" });
    if (!response.ok) throw new Error(`ticket: HTTP ${response.status}`);
    return (await response.json()).ticket;
  }

  function start() {
    const client = connect("/ws", { ticket });
    client.on("status", ({ status }) => (document.querySelector("#status").value = status));
    client.on("*", (event) => {
      const item = document.createElement("li");
      item.textContent = `${event.type} ${event.payload.sessionKey ?? ""}`;
      document.querySelector("#events").append(item);
    });
    window.livepanelClient = client;
  }

  document.querySelector("#login").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const form = new FormData(submit.target);
    const response = await fetch("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.fromEntries(form)),
    });
    if (response.ok) start();
  });
</script>
"""


@app.get("/", response_class=HTMLResponse)
def page() -> str:
    return PAGE


app.add_route("/livepanel.js", ScriptApp())
# the dashboard connects with a ticket, scripts with Basic credentials
app.add_middleware(
    LivePanelMiddleware, path="/ws", auth=AnyOf(BasicAuth.from_env(), TicketAuth(tickets))
)
