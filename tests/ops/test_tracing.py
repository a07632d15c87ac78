"""OpenTelemetry: one HTTP request publishes, two workers deliver; their delivery spans link
to the request's publish span, and the trace context never reaches a client."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.sync.client import connect

from livepanel import Broadcaster
from livepanel.tracing import instrument
from tests.faults.helpers import server_processes
from tests.integration.helpers import expect_welcome, recv_json
from tests.redis.redis_helpers import RedisServer, Tick, run, started, take

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
APP = "tests.ops.traced_worker_app:create_app"


def fetch(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method)
    with OPENER.open(request, timeout=10) as response:
        return json.load(response)


def test_publish_records_a_span_and_delivery_links_to_it_in_one_process() -> None:
    """Memory backend: the publish span is the current span's child; the delivery span is
    a trace of its own, linked to it; the subscriber's event is unchanged."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")

    async def scenario() -> list[Any]:
        async with started(Broadcaster()) as broadcaster:
            instrument(broadcaster, tracer_provider=provider)
            async with broadcaster.subscribe() as events:
                with tracer.start_as_current_span("request"):
                    broadcaster.publish(Tick(n=1))
                (event,) = await take(events, 1)
                assert "trace" not in event.to_json()
        return list(exporter.get_finished_spans())

    spans = {s.name: s for s in run(scenario())}
    request, publish, deliver = (
        spans["request"],
        spans["publish test.tick"],
        spans["deliver test.tick"],
    )
    assert publish.parent is not None
    assert publish.parent.span_id == request.get_span_context().span_id
    assert deliver.parent is None
    assert [link.context.span_id for link in deliver.links] == [publish.get_span_context().span_id]


def test_without_a_configured_sdk_nothing_is_recorded() -> None:
    """The API's default tracer records nothing, and the event carries no context."""

    async def scenario() -> Any:
        async with started(Broadcaster()) as broadcaster:
            instrument(broadcaster)  # the global provider: none configured in this process
            return broadcaster.publish(Tick(n=1))

    assert run(scenario()).trace is None


@pytest.mark.redis
def test_a_request_span_links_to_delivery_on_every_worker(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two workers on one Redis: the publish span is the request's child, each worker's
    delivery span links to it, the Redis entry holds the context, no client frame does."""
    with server_processes(["uvicorn-websockets"] * 2, tmp_path, redis_server.url, app=APP) as (
        workers
    ):
        with contextlib.ExitStack() as stack:
            clients = [
                stack.enter_context(connect(w.ws_url, proxy=None, open_timeout=5)) for w in workers
            ]
            for ws in clients:
                expect_welcome(ws)
            base = f"http://127.0.0.1:{workers[0].port}"
            published = fetch(f"{base}/publish?n=7", method="POST")
            for ws in clients:
                frame = recv_json(ws)
                assert frame["id"] == published["id"]
                assert set(frame) == {"type", "timestamp", "payload", "id"}  # no trace
        spans = {}
        deadline = time.monotonic() + 5
        for worker in workers:
            while True:  # a delivery span ends one loop turn after the client got the frame
                found = fetch(f"http://127.0.0.1:{worker.port}/spans")
                if any(s["name"] == "deliver test.tick" for s in found) or (
                    time.monotonic() > deadline
                ):
                    break
                time.sleep(0.05)
            spans[worker.port] = {s["name"]: s for s in found}
        first, second = (spans[w.port] for w in workers)
        request, publish = first["POST /publish"], first["publish test.tick"]
        assert (request["traceId"], request["spanId"]) == (
            published["traceId"],
            published["spanId"],
        )
        assert publish["parent"] == {"traceId": request["traceId"], "spanId": request["spanId"]}
        link = {"traceId": publish["traceId"], "spanId": publish["spanId"]}
        for worker_spans in (first, second):
            assert worker_spans["deliver test.tick"]["links"] == [link]
        assert "POST /publish" not in second  # the other worker only delivered
    stored = redis.Redis.from_url(redis_server.url).xrange("livepanel:events")
    ((_, fields),) = stored
    entry = json.loads(fields[b"event"])
    assert entry["trace"]["traceparent"].split("-")[1] == published["traceId"]


def test_a_stored_trace_context_is_read_back_but_never_written_to_the_wire() -> None:
    """The backend's stored form keeps the context; the wire form never has it."""
    from livepanel import Event

    stored = '{"type":"test.tick","timestamp":"2026-02-21T10:00:00.000Z","payload":{"n":1},'
    stored += '"trace":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}'
    event = Event.from_json(stored)
    assert event.trace == {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    assert "trace" not in event.to_json()
    not_strings = json.loads(stored) | {"trace": {"traceparent": 1}}
    assert Event.from_dict(not_strings).trace is None
