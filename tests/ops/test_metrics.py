"""/metrics scraped from a real uvicorn server: each counter moves by exactly what happened."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Iterator

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.exceptions import ConnectionClosed

from livepanel import BasicAuth, Broadcaster, LivePanelApp, LivePanelMiddleware, health_app
from livepanel.metrics import instrument
from tests.integration.helpers import (
    AUTH,
    TIMEOUT,
    basic,
    expect_error,
    expect_welcome,
    open_ws,
    recv_events,
    refusal,
    wait_until,
)
from tests.integration.test_slow_consumer import (
    QUEUE_SIZE,
    cron_output,
    drain,
    publish_in_step,
    stalled_reader,
)
from tests.servers import RunningServer, run_server

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
USERS = {"admin": "s3:cret", "viewer": "pw"}
Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(server: RunningServer) -> dict[Sample, float]:
    """Every sample of /metrics, by name and labels."""
    with OPENER.open(f"{server.http_url}/metrics", timeout=TIMEOUT) as response:
        text = response.read().decode()
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: dict[Sample, float], after: dict[Sample, float]) -> dict[str, float]:
    """The livepanel counters (and the histogram's count) that changed, by how much."""
    deltas: dict[str, float] = {}
    for key, now in after.items():
        name, labels = key
        if not name.startswith("livepanel_") or name.endswith("_created"):
            continue
        if name.endswith("_total") or name == "livepanel_delivery_seconds_count":
            delta = now - before.get(key, 0.0)
            if delta:
                label = ",".join(f"{k}={v}" for k, v in labels)
                deltas[f"{name}{{{label}}}" if label else name] = delta
    return deltas


def scrape_until(
    server: RunningServer, before: dict[Sample, float], expected: dict[str, float]
) -> dict[Sample, float]:
    """Scrape until the counters moved by ``expected`` since ``before`` (a writer counts a
    frame once its write completes, which may be just after the client has it); fail with
    the difference after a few seconds, or at once on a move beyond it."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        now = scrape(server)
        deltas = moved(before, now)
        if deltas == expected:
            return now
        overshoot = {k: v for k, v in deltas.items() if v > expected.get(k, 0.0)}
        if overshoot or time.monotonic() > deadline:
            assert deltas == expected
        time.sleep(0.02)


@contextlib.contextmanager
def instrumented_server() -> Iterator[tuple[RunningServer, Broadcaster, LivePanelApp]]:
    """A Starlette app on uvicorn: the endpoint at /ws (two connections per user at most,
    viewer refused by authorize), /metrics from a registry of its own and /healthz."""
    broadcaster = Broadcaster(queue_size=QUEUE_SIZE)
    registry = CollectorRegistry()

    def metrics(request: Request) -> Response:  # sync: Starlette runs it in a thread
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    app = LivePanelMiddleware(
        Starlette(routes=[Route("/metrics", metrics), Route("/healthz", health_app(broadcaster))]),
        path="/ws",
        broadcaster=broadcaster,
        auth=BasicAuth(lambda u, p: USERS.get(u) == p and u),
        authorize=lambda principal, scope: principal != "viewer",
        max_connections_per_user=2,
    )
    endpoint = app.endpoint
    instrument(broadcaster, endpoint, registry=registry)
    with run_server(app, "uvicorn-websockets") as server:
        yield server, broadcaster, endpoint


def test_every_counter_moves_by_exactly_what_happened() -> None:
    """Connect, refuse (401, 403, 429), receive, replay and close a slow client: /metrics
    follows each step exactly."""
    with instrumented_server() as (server, broadcaster, _endpoint):
        start = scrape(server)
        assert value(start, "livepanel_connections", transport="websocket") == 0
        assert value(start, "livepanel_backend_lag_seconds") == 0

        with open_ws(server) as first, open_ws(server) as second:
            expect_welcome(first)
            expect_welcome(second)
            connected = scrape_until(server, start, {"livepanel_handshakes_total{status=101}": 2})
            assert value(connected, "livepanel_connections", transport="websocket") == 2

            refusal(server, headers={"Authorization": basic("admin", "wrong")})
            refusal(server, headers={"Authorization": basic("viewer", "pw")})
            refusal(server, headers=AUTH)  # admin's third connection
            refused = scrape_until(
                server,
                connected,
                {
                    "livepanel_handshakes_total{status=401}": 1,
                    "livepanel_handshakes_total{status=403}": 1,
                    "livepanel_handshakes_total{status=429}": 1,
                },
            )

            events = [cron_output(broadcaster, n) for n in range(3)]
            for ws in (first, second):
                assert [f["id"] for f in recv_events(ws, 3)] == [e.id for e in events]
            received = scrape_until(
                server,
                refused,
                {
                    "livepanel_events_published_total": 3,
                    "livepanel_events_delivered_total": 6,
                    "livepanel_delivery_seconds_count": 3,
                },
            )
            assert value(received, "livepanel_delivery_seconds_bucket", le="+Inf") == 3

            second.close()
            wait_until(lambda: broadcaster.connection_count == 1, what="the close")
            with open_ws(server, f"since={events[0].id}") as again:
                expect_welcome(again)
                assert [f["id"] for f in recv_events(again, 2)] == [e.id for e in events[1:]]
            wait_until(lambda: broadcaster.connection_count == 1, what="the close")
            with open_ws(server, "since=0badc0de:1") as lost:
                expect_welcome(lost)
                expect_error(lost, "resume_unavailable")
            wait_until(lambda: broadcaster.connection_count == 1, what="the close")
            replayed = scrape_until(
                server,
                received,
                {
                    "livepanel_handshakes_total{status=101}": 2,
                    "livepanel_replays_total{outcome=granted}": 1,
                    "livepanel_replays_total{outcome=unavailable}": 1,
                    "livepanel_events_delivered_total": 2,
                },
            )

            with contextlib.suppress(ConnectionClosed), stalled_reader(server) as slow:
                published = publish_in_step(
                    broadcaster, first, lambda: broadcaster.stats()["slow_disconnects"] >= 1
                )
                seen, code = drain(slow, limit=len(published) + 10)
            assert code == 1013
            first.close()
            wait_until(lambda: broadcaster.connection_count == 0, what="every close")
            closed = scrape_until(
                server,
                replayed,
                {
                    "livepanel_handshakes_total{status=101}": 1,
                    "livepanel_events_published_total": len(published),
                    "livepanel_events_delivered_total": len(published) + len(seen),
                    "livepanel_delivery_seconds_count": len(published),
                    "livepanel_slow_disconnects_total": 1,
                },
            )
            assert value(closed, "livepanel_connections", transport="websocket") == 0
            assert value(closed, "livepanel_events_dropped_total") == 0


def test_multiprocess_copies_move_counters_by_their_change() -> None:
    """The copier of PROMETHEUS_MULTIPROC_DIR mode: counters grow by what moved since the last
    copy, gauges take the current value."""
    from livepanel.metrics import LivePanelCollector, _Copier

    broadcaster = Broadcaster()
    endpoint = LivePanelApp(broadcaster, auth=None)
    copier = _Copier(LivePanelCollector(broadcaster, endpoint))

    def copied(name: str, **labels: str) -> float:
        metric = copier.metrics[name]
        child = metric.labels(**labels) if labels else metric
        return float(child._value.get())

    async def replay_once() -> None:
        await broadcaster.start()
        async with broadcaster.subscribe(["*"], since=broadcaster.last_event_id) as sub:
            assert sub.resumed is True

    endpoint.handshakes[101] = 2
    asyncio.run(replay_once())
    copier.copy_once()
    endpoint.handshakes[101] = 5
    endpoint.handshakes[429] = 1
    endpoint.sse_fallbacks = 3
    copier.copy_once()
    copier.copy_once()  # nothing moved: nothing added
    assert copied("livepanel_sse_fallbacks") == 3
    assert copied("livepanel_handshakes", status="101") == 5
    assert copied("livepanel_handshakes", status="429") == 1
    assert copied("livepanel_replays", outcome="granted") == 1
    assert copied("livepanel_backend_lag_seconds") == 0


@pytest.mark.redis
def test_the_reader_lag_is_asked_of_redis_when_scraped(redis_url: str) -> None:
    """A scrape from another thread waits for the measurement; one on the loop itself gets
    the last one and starts the next: both 0 for a reader that keeps up."""
    from tests.redis.redis_helpers import run, started, take

    broadcaster = Broadcaster(redis_url)
    registry = CollectorRegistry()
    collector = instrument(broadcaster, registry=registry)

    async def scenario() -> tuple[float, float]:
        async with started(broadcaster), broadcaster.subscribe() as events:
            await broadcaster.apublish("session.killed", {"sessionKey": "s1", "agentId": "a1"})
            await take(events, 1)  # read: nothing waits
            text = await asyncio.to_thread(generate_latest, registry)  # off the loop: waits
            off_loop = value(parse_text(text.decode()), "livepanel_backend_lag_seconds")
            collector._lag_at = -10.0  # stale: the next scrape on the loop refreshes it
            on_loop = collector.backend_lag()
            refreshing = collector._refreshing
            assert refreshing is not None
            await refreshing
            assert collector._lag_at > 0
            return off_loop, on_loop

    assert run(scenario()) == (0.0, 0.0)


def parse_text(text: str) -> dict[Sample, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
