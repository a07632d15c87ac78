"""Lag on the Quickstart's middleware app with every feature on, two workers on Redis: a
dashboard that stops acking shows in its worker's metrics and fails its worker's health
alone (the other worker, whose dashboards all ack, stays ok)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from tests.frameworks.test_composition import (
    AUTH,
    SESSIONS,
    Workers,
    eventually,
    publish,
    sample,
    two_workers,
    ws_worker,
)
from tests.lag.clients import Dashboard

pytestmark = pytest.mark.redis

LIMIT = 2.0


def on_worker(workers: Workers, pid: str, path: str) -> tuple[int, str]:
    """``GET path`` until worker ``pid`` answers (each request on a connection of its own)."""
    for _ in range(200):
        response = workers.request("GET", path, headers=AUTH)
        if response.headers["x-worker"] == pid:
            return response.status_code, response.text
    raise AssertionError(f"worker {pid} never answered {path}")


def test_a_stalled_dashboard_fails_only_its_own_workers_health(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One acking dashboard per worker; one stops acking while the Quickstart's REST call
    publishes: its worker's metric and health show it, the other worker stays ok."""
    monkeypatch.setenv("COMPOSITION_LAG_LIMIT", str(LIMIT))
    with two_workers(redis_url, tmp_path) as (workers, pids), contextlib.ExitStack() as stack:
        kept: dict[str, Dashboard] = {}
        for _ in range(100):
            dashboard = Dashboard(workers.server, query=SESSIONS, headers=AUTH)
            pid = ws_worker(dashboard.ws)
            if pid in kept:
                dashboard.close()
            else:
                kept[pid] = dashboard
                stack.callback(dashboard.close)
            if set(kept) == pids:
                break
        assert set(kept) == pids, "a dashboard on each worker"
        frozen_pid, live_pid = sorted(pids)
        stop = threading.Event()

        def spawn() -> None:
            for _ in range(600):  # at most a minute
                if stop.wait(0.1):
                    return
                publish(workers)

        publisher = threading.Thread(target=spawn, daemon=True)
        publisher.start()
        stack.callback(publisher.join, 10)
        stack.callback(stop.set)
        eventually(
            lambda: all(d.acked for d in kept.values()) or None, 10, "both dashboards acking"
        )
        kept[frozen_pid].acking = False

        def metric_shows_it() -> bool | None:
            _, page = on_worker(workers, frozen_pid, "/metrics")
            name = "livepanel_connection_lag_seconds_bucket"
            over = sample(page, name, le="+Inf") - sample(page, name, le="1.0")
            return True if over == 1 else None

        eventually(metric_shows_it, 5, "the stalled dashboard in its worker's metric")

        def not_ok() -> str | None:
            status, body = on_worker(workers, frozen_pid, "/healthz")
            return body if status == 503 else None

        body = eventually(not_ok, LIMIT + 5, "the stalled dashboard's worker not ok")
        assert '"dashboards": "not_acking"' in body
        status, body = on_worker(workers, live_pid, "/healthz")
        assert status == 200, body
        assert '"dashboards": "ok"' in body
        time.sleep(0.1)
        assert kept[live_pid].closed_with is None
        assert kept[frozen_pid].closed_with is None
