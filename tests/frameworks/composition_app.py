"""The Quickstart's FastAPI app with every documented feature switched on at once.

``uvicorn tests.frameworks.composition_app:app --workers 2`` with
``LIVEPANEL_BACKEND_URL=redis://...``, ``DASHBOARD_USERNAME``,
``DASHBOARD_PASSWORD`` and ``LIVEPANEL_TICKET_SECRET``: the endpoint at
``/ws`` through ``app.add_middleware(LivePanelMiddleware, ...)`` as in
examples/quickstart/app.py, accepting the Basic login or a ticket, with
audiences; state on connect and SSE (built in); Prometheus metrics at
``/metrics``, the health check at ``/healthz``, presence at ``/presence`` and
OpenTelemetry spans (an in-memory exporter) at ``/spans``. A host middleware
added last wraps everything, the endpoint included, and names the worker
process that answered in an ``X-Worker`` header.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from asgiref.typing import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from livepanel import (
    AnyOf,
    BasicAuth,
    LivePanelApp,
    LivePanelMiddleware,
    TicketAuth,
    Tickets,
    broadcast_event,
    health_app,
)
from livepanel.assets import ScriptApp
from livepanel.events import SessionCreated
from livepanel.metrics import instrument
from livepanel.presence import track
from livepanel.tickets import TicketPrincipal
from livepanel.tracing import instrument as trace_events

# one login for the API and the WebSocket, as in the Quickstart (fails at start if unset)
auth = BasicAuth.from_env()
tickets = Tickets.from_env()  # LIVEPANEL_TICKET_SECRET, the same in every worker


def audiences(principal: Any, scope: Any) -> set[str] | None:
    """A ticket's holder sees its audiences and their own; the dashboard's login sees all."""
    if isinstance(principal, TicketPrincipal):
        return {*(principal.audiences or ()), f"user:{principal.username}"}
    return None


# the endpoint, made first so that metrics, health and presence can be handed it
endpoint = LivePanelApp(auth=AnyOf(auth, TicketAuth(tickets)), audiences=audiences)
broadcaster = endpoint.broadcaster  # the default one: Redis, from LIVEPANEL_BACKEND_URL
# the tests of lag use a short limit; 30 s (the default) otherwise
broadcaster.lag_limit = float(os.environ.get("COMPOSITION_LAG_LIMIT", "30"))

instrument(broadcaster, app=endpoint)
track(endpoint, announce=True)
spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
tracer = provider.get_tracer("composition")
trace_events(broadcaster, tracer_provider=provider)


class WorkerHeader:
    """A host middleware around everything: ``X-Worker: <pid>`` on every response,
    WebSocket accepts and refusals included."""

    def __init__(self, app: ASGI3Application) -> None:
        self.app = app
        self.header = (b"x-worker", str(os.getpid()).encode())

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        async def named(message: Any) -> None:
            if message["type"] in (
                "http.response.start",
                "websocket.accept",
                "websocket.http.response.start",
            ):
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, named)


app = FastAPI()
# the WebSocket (and event stream) endpoint at exactly /ws
app.add_middleware(LivePanelMiddleware, path="/ws", endpoint=endpoint)
app.add_middleware(WorkerHeader)
# the browser client, livepanel.js, shipped inside the package
app.add_route("/livepanel.js", ScriptApp())
app.add_route("/healthz", health_app(endpoint))


async def login(request: Request) -> str:
    """The same Basic Auth as the endpoint, for the API."""
    user = await auth(request.scope)
    if not user:
        raise HTTPException(401, headers={"WWW-Authenticate": auth.challenge})
    return str(user)


@app.post("/api/sessions")
def spawn_session(
    agent: str = "atlas", audience: str | None = None, user: str = Depends(login)
) -> dict[str, str]:
    """Business code: do the work inside the request's span, then tell the dashboards."""
    key = f"session-{uuid.uuid4().hex[:8]}"
    with tracer.start_as_current_span("POST /api/sessions"):
        broadcast_event(
            SessionCreated(session_key=key, agent_id=agent, kind="direct"),
            audience=None if audience is None else {audience},
        )
    return {"sessionKey": key}


@app.post("/api/livepanel-ticket")
def ticket(holder: str, team: str, user: str = Depends(login)) -> dict[str, str]:
    """A ticket for a page that cannot send the login: ``holder`` sees ``team:<team>``."""
    return {"ticket": tickets.issue(holder, [f"team:{team}"])}


@app.get("/metrics")
def metrics() -> Response:
    """Sync: run in a thread, it can wait for the reader's lag to be measured."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@app.get("/presence")
async def presence() -> dict[str, Any]:
    return await broadcaster.presence()


@app.get("/spans")
def finished_spans() -> list[str]:
    return [span.name for span in spans.get_finished_spans()]
