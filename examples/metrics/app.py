"""livepanel with Prometheus metrics and a health check, in FastAPI.

One process:

    DASHBOARD_USERNAME=admin DASHBOARD_PASSWORD=secret uvicorn examples.metrics.app:app

Several worker processes on one Redis, one /metrics for all of them (each scrape
adds up what every worker wrote to PROMETHEUS_MULTIPROC_DIR; empty it before start):

    rm -rf prometheus-multiproc && mkdir prometheus-multiproc
    PROMETHEUS_MULTIPROC_DIR=prometheus-multiproc \\
    LIVEPANEL_BACKEND_URL=redis://localhost:6379/0 \\
    DASHBOARD_USERNAME=admin DASHBOARD_PASSWORD=secret \\
        uvicorn examples.metrics.app:app --workers 4

Then: GET /metrics (Prometheus), GET /healthz and /livez (200 or 503), the dashboards at /ws.
"""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from livepanel import BasicAuth, LivePanelApp, LivePanelMiddleware, get_broadcaster, health_app
from livepanel.events import SessionCreated
from livepanel.metrics import instrument

broadcaster = get_broadcaster()  # Redis when LIVEPANEL_BACKEND_URL says so
# the endpoint is made first, so that instrument() counts its handshakes
endpoint = LivePanelApp(broadcaster, auth=BasicAuth.from_env())
instrument(broadcaster, app=endpoint)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await broadcaster.start()  # every worker reads the stream from startup on
    yield
    # the middleware has closed the endpoint's connections: /healthz answers 503 (draining)
    await broadcaster.close()


app = FastAPI(title="ClawPanel", lifespan=lifespan)
# the WebSocket endpoint at exactly /ws, as in the Quickstart
app.add_middleware(LivePanelMiddleware, path="/ws", endpoint=endpoint)
# routes, not mounts: exactly /healthz, never a redirect (probes count a 3xx as a success)
app.add_route("/healthz", health_app(endpoint))  # readiness, load balancers
app.add_route("/livez", health_app(endpoint, liveness=True))  # 503 only when stalled


@app.get("/metrics")
def metrics() -> Response:
    """Sync on purpose: run in a thread, it can wait for the reader's lag to be measured."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@app.post("/api/sessions/spawn")
def spawn_session(agent_id: str = "main") -> dict[str, str]:
    """Publishes from a worker thread, as business code does."""
    key = f"session-{uuid.uuid4().hex[:8]}"
    broadcaster.publish(SessionCreated(session_key=key, agent_id=agent_id, kind="direct"))
    return {"sessionKey": key}
