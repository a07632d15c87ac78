"""examples/metrics: /metrics and /healthz in FastAPI, in one process and in several."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("prometheus_client")

from websockets.sync.client import connect

from tests.examples.test_examples import BASIC, PASSWORD, USER, load, next_event
from tests.ops.test_metrics import Sample, value
from tests.redis.redis_helpers import free_port
from tests.servers import run_server

ROOT = Path(__file__).parents[2]


def answers(http: httpx.Client) -> bool:
    """The server accepts connections and serves /metrics."""
    try:
        return http.get("/metrics").status_code == 200
    except httpx.TransportError:
        return False


def parse(text: str) -> dict[Sample, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.usefixtures("example_env")
def test_example_serves_metrics_and_health(server_logs: object) -> None:
    """One process: a published event shows in /metrics; /healthz answers 200 with the count."""
    app = load("examples.metrics.app").app
    with run_server(app, "uvicorn-websockets", lifespan=True) as server:
        with (
            httpx.Client(base_url=server.http_url, timeout=5) as http,
            connect(server.ws_url + "/ws/", additional_headers=BASIC, open_timeout=5) as ws,
        ):
            key = http.post("/api/sessions/spawn").json()["sessionKey"]
            assert next_event(ws)["payload"]["sessionKey"] == key
            samples = parse(http.get("/metrics").text)
            assert value(samples, "livepanel_events_published_total") == 1
            assert value(samples, "livepanel_events_delivered_total") == 1
            assert value(samples, "livepanel_connections", transport="websocket") == 1
            assert value(samples, "livepanel_handshakes_total", status="101") == 1
            health = http.get("/healthz")
            assert health.status_code == 200
            assert health.json() == {
                "ok": True,
                "backend": "ok",
                "readerLagSeconds": 0.0,
                "connections": 1,
                "draining": False,
                "dashboards": "ok",
                "ackLag": {"acking": 0, "behind": 0, "maxSeconds": 0.0, "limitSeconds": 30.0},
                "reason": None,
            }


@pytest.mark.redis
def test_multiprocess_metrics_add_up_every_worker(redis_url: str, tmp_path: Path) -> None:
    """Two uvicorn workers with PROMETHEUS_MULTIPROC_DIR: one /metrics counts both."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "LIVEPANEL_BACKEND_URL": redis_url,
        "DASHBOARD_USERNAME": USER,
        "DASHBOARD_PASSWORD": PASSWORD,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    log = tmp_path / "uvicorn.log"
    command = [
        *(sys.executable, "-m", "uvicorn", "examples.metrics.app:app", "--workers", "2"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=5) as http:
            deadline = time.monotonic() + 30
            while len({p.name.rsplit("_", 1)[-1] for p in directory.glob("*.db")}) < 2 or (
                not answers(http)
            ):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"two workers did not start:\n{log.read_text()}"
                time.sleep(0.1)
            with contextlib.ExitStack() as stack:
                clients = [
                    stack.enter_context(
                        connect(
                            f"ws://127.0.0.1:{port}/ws/", additional_headers=BASIC, open_timeout=5
                        )
                    )
                    for _ in range(4)
                ]
                keys = [http.post("/api/sessions/spawn").json()["sessionKey"] for _ in range(3)]
                for ws in clients:
                    assert [next_event(ws)["payload"]["sessionKey"] for _ in keys] == keys
                expected = {
                    ("livepanel_events_published_total", ()): 3.0,
                    ("livepanel_events_delivered_total", ()): 12.0,
                    ("livepanel_connections", (("transport", "websocket"),)): 4.0,
                    ("livepanel_handshakes_total", (("status", "101"),)): 4.0,
                }
                deadline = time.monotonic() + 10
                while True:
                    samples = parse(http.get("/metrics").text)
                    got = {key: samples.get(key) for key in expected}
                    if got == expected:
                        break
                    assert time.monotonic() < deadline, json.dumps(
                        {f"{k[0]}{dict(k[1])}": v for k, v in got.items()}
                    )
                    time.sleep(0.2)
                assert value(samples, "livepanel_delivery_seconds_count") >= 3
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
