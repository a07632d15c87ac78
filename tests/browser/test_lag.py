"""A Chromium dashboard whose JavaScript is stalled shows up as lagging: in stats(), the
metric, ``livepanel top`` and, once every dashboard of the worker is stalled, health."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from livepanel import Broadcaster, LivePanelMiddleware, health_app
from livepanel.assets import ScriptApp
from livepanel.top import parse_metrics, read, render
from tests.browser.conftest import wait_until
from tests.lag.clients import events_flowing
from tests.servers import RunningServer, run_server

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest

from livepanel.metrics import instrument

LIMIT = 3.0  # the broadcaster's lag_limit here, seconds
HEARTBEAT = 1.0  # the server pings this often: it must neither close nor hide a frozen page
DASHBOARD = """async () => {
  const { connect } = await import("/livepanel.js");
  window.handled = 0;
  window.client = connect("/ws", { transport: "websocket" });
  window.client.on("session.created", () => { window.handled += 1; });
}"""
T = TypeVar("T")


@contextlib.contextmanager
def served() -> Iterator[tuple[RunningServer, Broadcaster]]:
    """A page, /livepanel.js, the endpoint at /ws (the Quickstart's middleware), /metrics
    and /healthz, on uvicorn."""
    broadcaster = Broadcaster(lag_limit=LIMIT)
    registry = CollectorRegistry()

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    def page(request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>lag</title>")

    routes = [
        Route("/", page),
        Route("/livepanel.js", ScriptApp()),
        Route("/metrics", metrics),
        Route("/healthz", health_app(broadcaster)),
    ]
    app = LivePanelMiddleware(
        Starlette(routes=routes),
        path="/ws",
        broadcaster=broadcaster,
        auth=None,
        heartbeat_interval=HEARTBEAT,
    )
    instrument(broadcaster, app.endpoint, registry=registry)
    with run_server(app, "uvicorn-websockets") as server:
        yield server, broadcaster


def within(seconds: float, probe: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


def freeze(page: Any) -> Any:
    """Stall the page's JavaScript: the debugger pauses it at the next statement it runs
    (the next frame's handler). Returns the CDP session, to resume it."""
    session = page.context.new_cdp_session(page)
    session.send("Debugger.enable")
    session.send("Debugger.pause")
    return session


def test_a_frozen_page_shows_in_stats_metrics_top_and_health(browser: Any) -> None:
    """Two pages in Chromium; one's JavaScript is stalled while the other keeps acking:
    within 5 s the frozen one is in stats(), the metric and top. Then both are frozen:
    health turns not ok. The heartbeat closes neither."""
    with served() as (server, broadcaster):
        base = f"http://127.0.0.1:{server.port}"
        urls = [f"{base}/healthz", f"{base}/metrics"]
        contexts = [browser.new_context(), browser.new_context()]  # a renderer each
        sessions: list[Any] = []
        try:
            pages = []
            for context in contexts:
                page = context.new_page()
                page.goto(f"{base}/")
                page.evaluate(DASHBOARD)
                wait_until(page, "() => window.client.status === 'open'")
                pages.append(page)
            frozen, live = pages
            with events_flowing(broadcaster):
                for page in pages:
                    wait_until(page, "() => window.client.ackedId !== null")
                within(5, lambda: broadcaster.stats()["lag"]["acking"] == 2, "two acking pages")
                sessions.append(freeze(frozen))
                frozen_at = time.monotonic()

                def listed() -> dict[str, Any] | None:
                    lag = broadcaster.stats()["lag"]
                    first = lag["connections"][0]
                    return lag if first["lag_seconds"] >= 1.0 and first["lag_events"] > 0 else None

                lag = within(5, listed, "the frozen page in stats()")
                assert lag["acking"] == 2
                assert lag["connections"][1]["lag_seconds"] < 1.0  # the live page keeps up
                within(
                    5,
                    lambda: (bucket(base, "1.0") or 0) == 1 and bucket(base, "+Inf") == 2,
                    "one of the two pages over a second in livepanel_connection_lag_seconds",
                )
                screen = within(5, lambda: top_shows(urls, "ack lag", "acking 2"), "top's lag")
                assert any(line.startswith("dashboards  ok") for line in screen)
                assert time.monotonic() - frozen_at < 5 + 5  # each step had 5 s
                within(LIMIT + 5, lambda: top_shows(urls, "dashboards", "behind 1"), "top")
                assert health(base)[0] == 200  # one page still acks: this worker is fine
                live_handled = live.evaluate("() => window.handled")
                assert live_handled > 0
                sessions.append(freeze(live))
                _, report = within(
                    LIMIT + 5, lambda: (s := health(base))[0] == 503 and s, "health not ok"
                )
                assert report["dashboards"] == "not_acking"
                assert report["ackLag"]["behind"] == 2
                assert "every dashboard that acks (2)" in report["reason"]
                assert any(line.startswith("reason") for line in render(read(urls), None))
                assert broadcaster.stats()["connections"] == 2  # the heartbeat closed neither
            for session in sessions:
                session.send("Debugger.resume")
            wait_until(live, "() => window.client.status === 'open'")
            within(10, lambda: health(base)[0] == 200, "health ok once the pages ack again")
        finally:
            for context in contexts:
                context.close()


def top_shows(urls: list[str], start: str, text: str) -> list[str] | None:
    """``livepanel top``'s screen once a line starting with ``start`` holds ``text``."""
    lines = render(read(urls), None)
    return lines if any(line.startswith(start) and text in line for line in lines) else None


def bucket(base: str, le: str) -> float | None:
    page = httpx.get(f"{base}/metrics", timeout=5, trust_env=False).text
    return parse_metrics(page).get(("livepanel_connection_lag_seconds_bucket", (("le", le),)))


def health(base: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{base}/healthz", timeout=5, trust_env=False)
    return response.status_code, response.json()
