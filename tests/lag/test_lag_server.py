"""Lag through a real uvicorn server: stats(), the metric, health and ``livepanel top``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from livepanel import Broadcaster, LivePanelMiddleware, health_app
from livepanel.top import parse_metrics, read, render
from tests.integration.helpers import admin_only
from tests.lag.clients import dashboards, events_flowing
from tests.servers import RunningServer, run_server

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest

from livepanel.metrics import instrument

LIMIT = 2.0  # the broadcaster's lag_limit in these tests, seconds
HEARTBEAT = 0.5  # the server pings idle clients this often: it must not hide a lag
T = TypeVar("T")


@contextlib.contextmanager
def lag_server() -> Iterator[tuple[RunningServer, Broadcaster]]:
    """The endpoint at /ws (the Quickstart's middleware), /metrics and /healthz on uvicorn."""
    broadcaster = Broadcaster(lag_limit=LIMIT)
    registry = CollectorRegistry()

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    app = LivePanelMiddleware(
        Starlette(routes=[Route("/metrics", metrics), Route("/healthz", health_app(broadcaster))]),
        path="/ws",
        broadcaster=broadcaster,
        auth=admin_only(),
        heartbeat_interval=HEARTBEAT,
    )
    instrument(broadcaster, app.endpoint, registry=registry)
    with run_server(app, "uvicorn-websockets") as server:
        yield server, broadcaster


def within(seconds: float, probe: Callable[[], T | None], what: str) -> T:
    """``probe()`` once it returns something truthy; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


def health(server: RunningServer) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{server.http_url}/healthz", timeout=5, trust_env=False)
    return response.status_code, response.json()


def metric(server: RunningServer, name: str, **labels: str) -> float | None:
    page = httpx.get(f"{server.http_url}/metrics", timeout=5, trust_env=False).text
    return parse_metrics(page).get((name, tuple(sorted(labels.items()))))


def by_user_lag(broadcaster: Broadcaster) -> list[dict[str, Any]]:
    return list(broadcaster.stats()["lag"]["connections"])


def test_a_dashboard_that_stops_acking_shows_in_stats_metrics_top_and_then_health() -> None:
    """Two acking dashboards and one that never acks: one stalls, and within 5 s stats(),
    the metric and top show it; health stays ok while one still acks, and turns not ok,
    with its reason, once both stopped; the heartbeat closes neither."""
    with lag_server() as (server, broadcaster), dashboards(server, True, True, False) as clients:
        live, frozen, silent = clients
        with events_flowing(broadcaster):
            within(5, lambda: broadcaster.stats()["lag"]["acking"] == 2, "both acking dashboards")
            assert health(server)[0] == 200
            frozen.acking = False
            stalled_at = time.monotonic()

            def seen_behind() -> bool:
                lag = broadcaster.stats()["lag"]
                return lag["lagging"] >= 1 and lag["max_seconds"] >= 1.0

            within(5, seen_behind, "the frozen dashboard in stats()")
            first = by_user_lag(broadcaster)[0]
            assert first["lag_events"] > 0
            assert first["lag_seconds"] <= time.monotonic() - stalled_at + 0.5
            within(
                5,
                lambda: (
                    (metric(server, "livepanel_connection_lag_seconds_bucket", le="1.0") or 0)
                    < (metric(server, "livepanel_connection_lag_seconds_bucket", le="+Inf") or 0)
                ),
                "a connection lagging over a second in the metric",
            )
            assert metric(server, "livepanel_connection_lag_seconds_bucket", le="+Inf") == 2.0
            urls = [f"{server.http_url}/healthz", f"{server.http_url}/metrics"]
            screen = within(
                5,
                lambda: next(
                    (
                        lines
                        for lines in [render(read(urls), None)]
                        if any("behind 1" in line for line in lines)
                    ),
                    None,
                ),
                "top showing one dashboard behind",
            )
            assert any(line.startswith("ack lag") and "acking 2" in line for line in screen)
            time.sleep(LIMIT + 0.5)
            status, report = health(server)
            assert (status, report["dashboards"], report["ackLag"]["behind"]) == (200, "ok", 1)
            live.acking = False
            status, report = within(
                LIMIT + 5, lambda: (s := health(server))[0] == 503 and s, "health not ok"
            )
            assert report["dashboards"] == "not_acking"
            assert "every dashboard that acks (2)" in report["reason"]
            assert report["ackLag"]["acking"] == 2
            live.acking = True
            within(5, lambda: health(server)[0] == 200, "health ok again once one acks")
        assert all(c.closed_with is None for c in (live, frozen, silent)), (
            "the heartbeat closed one"
        )
        assert silent.received > 0


def test_dashboards_that_never_ack_do_not_fail_health() -> None:
    """Events flow to clients that never ack (third-party ones): no reading, health ok."""
    with lag_server() as (server, broadcaster), dashboards(server, False, False) as clients:
        with events_flowing(broadcaster):
            time.sleep(LIMIT + 1.5)
            status, report = health(server)
            assert (status, report["dashboards"]) == (200, "ok")
            lag = broadcaster.stats()["lag"]
            assert (lag["acking"], lag["not_acking"]) == (0, 2)
        assert all(client.received > 0 for client in clients)


def test_an_idle_stream_never_makes_an_acking_dashboard_behind() -> None:
    """Everything sent is acknowledged, nothing flows: lag 0 and health ok, however long."""
    with lag_server() as (server, broadcaster), dashboards(server, True) as (client,):
        with events_flowing(broadcaster, per_second=10) as published:
            within(5, lambda: len(published) >= 5, "some events")
        within(5, lambda: client.acked == published[-1], "the last event acknowledged")
        time.sleep(LIMIT + 0.5)
        lag = broadcaster.stats()["lag"]
        assert (lag["acking"], lag["lagging"], lag["max_seconds"]) == (1, 0, 0.0)
        assert health(server)[0] == 200


def test_lying_acks_make_no_negative_or_bogus_lag() -> None:
    """Acks of ids from the future, another epoch, garbage or not even strings: never a
    negative reading; a future id counts as the newest event, so the liar is up to date
    until events it does not acknowledge flow."""
    with lag_server() as (server, broadcaster), dashboards(server, False) as (liar,):
        with events_flowing(broadcaster) as published:
            within(5, lambda: len(published) >= 3, "some events")
            for lie in ("garbage", "ffffffff:1", "0:-5", 12, None, ["x"], "e" * 3000):
                liar.send_ack(lie)
            time.sleep(0.3)
            assert broadcaster.stats()["lag"]["acking"] == 0  # nothing it said moved a mark
            epoch = published[-1].split(":")[0]
            liar.send_ack(f"{epoch}:999999999999")
            within(5, lambda: broadcaster.stats()["lag"]["acking"] == 1, "the liar's mark")
            for _ in range(10):
                (reading,) = by_user_lag(broadcaster)
                assert reading["lag_events"] >= 0
                assert reading["lag_seconds"] >= 0
                assert reading["lag_events"] <= len(published)
                time.sleep(0.1)
        assert liar.closed_with is None


def test_a_dashboard_behind_is_listed_with_its_user_and_transport() -> None:
    """stats()["lag"]["connections"] names the user and the transport, furthest behind first."""
    with lag_server() as (server, broadcaster), dashboards(server, True, False) as (_, stuck):
        stuck.acking = True
        with events_flowing(broadcaster):
            within(5, lambda: broadcaster.stats()["lag"]["acking"] == 2, "both acking")
            stuck.acking = False
            within(5, lambda: broadcaster.stats()["lag"]["max_seconds"] > 0.5, "one behind")
            first, second = by_user_lag(broadcaster)
            assert (first["user"], first["transport"]) == ("admin", "websocket")
            assert first["lag_seconds"] >= second["lag_seconds"]
