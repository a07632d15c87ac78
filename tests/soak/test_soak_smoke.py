"""A 30-second run of benchmarks/soak.py: hundreds of clients on one worker with churn;
any event lost or repeated fails it. (The full soak is ``make soak``: 2,000 clients, 10 min.)"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.soak

SOAK = Path(__file__).parents[2] / "benchmarks" / "soak.py"


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_thirty_seconds_of_churn_lose_and_repeat_nothing(tmp_path: Path) -> None:
    """300 clients, 10 events/s for 30 s, 10% reconnecting with since every 3 s: every
    client gets every event once, in order."""
    report_file = tmp_path / "report.json"
    command = [
        *(sys.executable, str(SOAK), "--duration", "30", "--clients", "300"),
        *("--rate", "10", "--reconnect-every", "3", "--json", str(report_file)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(report_file.read_text())
    assert report["events_published"] == 300
    assert report["lost"] == 0
    assert report["duplicates"] == 0
    assert report["events_delivered"] == report["deliveries_expected"] == 300 * 300
    assert report["forced_reconnects"] >= 8 * 30  # the churn happened
    assert report["failed_connects"] == 0
    assert "Traceback" not in done.stderr


def test_the_soak_counts_a_gap_and_a_duplicate() -> None:
    """The soak's own bookkeeping catches what it is there to catch."""
    soak = load_soak()
    totals = soak.Totals()

    async def feed() -> None:
        client = soak.SoakClient(0, 1, "Basic x", totals)
        welcome = {"type": "welcome", "payload": {"lastEventId": "e:0"}}
        client.on_text(json.dumps(welcome))
        for n in (0, 1, 3, 3, 2, 4):  # 2 is missing when 3 comes, then comes late
            tick = {"type": "soak.tick", "id": f"e:{n + 1}", "payload": {"n": n, "sent": 0.0}}
            client.on_text(json.dumps(tick))

    asyncio.run(feed())
    assert totals.lost == 1
    assert totals.duplicates == 2
    assert totals.received == 6
