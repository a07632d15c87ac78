"""A rolling deploy in small: benchmarks/deploy.py with 60 clients on two uvicorn workers on a
private Redis, each worker restarted in turn while 50 events/s flow. Nothing is lost or
repeated, no second holds more accepts than the rate allows, and every client a worker
closed is back within the documented bound. (The full run is 1,000 clients: see
docs/staying-live.md.)"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.redis.redis_helpers import RedisServer

pytestmark = pytest.mark.redis

DEPLOY = Path(__file__).parents[2] / "benchmarks" / "deploy.py"
SRC = Path(__file__).parents[2] / "src"


def load_deploy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy", DEPLOY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["deploy"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(180)
def test_two_workers_restarted_in_turn_lose_nothing_and_admit_at_the_rate(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """60 clients, admission_rate 15/s (burst 2), reconnect_window 2 s, 50 events/s: each
    worker gets SIGTERM and starts again; every client has every event once, each worker's
    busiest second holds at most 18 accepts, and the closed clients are all back within
    2 x window + 5 s of the signal."""
    report_file = tmp_path / "report.json"
    command = [
        *(sys.executable, str(DEPLOY), "--clients", "60", "--rate", "15", "--burst", "2"),
        *("--window", "2", "--settle", "2", "--redis", redis_server.url),
        *("--json", str(report_file)),
    ]
    env = {**os.environ, "PYTHONPATH": str(SRC)}  # this tree's livepanel
    done = subprocess.run(command, capture_output=True, text=True, timeout=170, env=env)
    assert report_file.exists(), done.stdout + done.stderr
    report: dict[str, Any] = json.loads(report_file.read_text())
    assert report["problems"] == [], report
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["lost"] == 0
    assert report["duplicates"] == 0
    assert report["delivered"] == report["deliveries_expected"] > 60 * 100
    assert [r["worker"] for r in report["restarts"]] == ["a", "b"]
    for phase in report["restarts"]:
        assert phase["clients_closed"] > 0
        assert phase["not_back"] == 0
        assert phase["all_back_s"] <= 2 * 2 + 5
    assert report["closes"].get("close 1012", 0) >= sum(
        r["clients_closed"] for r in report["restarts"]
    )
    for worker in report["workers"].values():
        assert worker["max_accepts_per_second"] <= 15 * 1.2
    assert sum(w["answered_429"] for w in report["workers"].values()) > 0  # it was needed
    assert "Traceback" not in done.stderr


def test_the_load_client_counts_a_gap_and_a_duplicate() -> None:
    """The deploy's own bookkeeping catches what it is there to catch."""
    deploy = load_deploy()
    totals = deploy.Totals()

    async def feed() -> None:
        client = deploy.LoadClient(0, [1], totals, batch=False)
        client.on_text(json.dumps({"type": "welcome", "payload": {"lastEventId": "e:0"}}))
        for n in (0, 1, 3, 3, 2, 4):  # 2 is missing when 3 comes, then comes late
            tick = {"type": "deploy.tick", "id": f"e:{n + 1}", "payload": {"n": n}}
            client.on_text(json.dumps(tick))

    asyncio.run(feed())
    assert totals.lost == 1
    assert totals.duplicates == 2
    assert totals.received == 6


class Sink:
    """A transport that takes what a client writes and forgets it."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_load_client_reads_the_hints_of_a_refusal_and_a_close() -> None:
    """429's Retry-After and a close's retry_after=<seconds> reason are what it waits on."""
    deploy = load_deploy()

    async def feed() -> tuple[Any, Any]:
        refused = deploy.HintedWire(b"", "k", lambda text: None)
        refused.transport = Sink()
        refused.data_received(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n\r\n{}")
        closing = deploy.HintedWire(b"", "k", lambda text: None)
        closing.transport = Sink()
        closing.frame(0x8, True, (1012).to_bytes(2, "big") + b"retry_after=2.35")
        return refused, closing

    refused, closing = asyncio.run(feed())
    assert (refused.status, refused.retry_after) == (429, 3.0)
    assert closing.close_reason == "retry_after=2.35"
    assert closing.close_code == 1012
