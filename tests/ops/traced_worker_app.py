"""A worker of the tracing test: tests.redis.redis_worker_app's endpoints, traced.

``uvicorn tests.ops.traced_worker_app:create_app --factory`` with
``LIVEPANEL_BACKEND_URL=redis://...``: an OpenTelemetry SDK with an in-memory
exporter, ``livepanel.tracing.instrument`` on the default broadcaster,
``POST /publish?n=N`` publishing ``Tick(N)`` inside a server span (answering
the span's ids), ``GET /spans`` (every finished span), ``GET /health`` and the
endpoint at ``/ws/``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from livepanel import LivePanelApp, get_broadcaster
from livepanel.tracing import instrument
from tests.redis.redis_helpers import Tick


def ids(context: Any) -> dict[str, str]:
    return {"traceId": format(context.trace_id, "032x"), "spanId": format(context.span_id, "016x")}


def describe(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        **ids(span.get_span_context()),
        "parent": None if span.parent is None else ids(span.parent),
        "links": [ids(link.context) for link in span.links],
    }


def create_app() -> Starlette:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    broadcaster = get_broadcaster()
    instrument(broadcaster, tracer_provider=provider)

    async def publish(request: Request) -> JSONResponse:
        with tracer.start_as_current_span("POST /publish", kind=trace.SpanKind.SERVER) as span:
            event = await broadcaster.apublish(Tick(n=int(request.query_params["n"])))
        return JSONResponse({"id": event.id, **ids(span.get_span_context())})

    async def spans(request: Request) -> JSONResponse:
        return JSONResponse([describe(s) for s in exporter.get_finished_spans()])

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"pid": os.getpid()})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await broadcaster.start()
        yield
        await broadcaster.close()

    return Starlette(
        routes=[
            Route("/publish", publish, methods=["POST"]),
            Route("/spans", spans),
            Route("/health", health),
            Mount("/ws", LivePanelApp(broadcaster, auth=None)),
        ],
        lifespan=lifespan,
    )
