"""The fan-out benchmark's smoke run: every target starts, delivers every event, loses none.

Nothing here is timed; the numbers of a smoke run mean nothing. A target whose
peer package is missing is skipped, except under ``LIVEPANEL_REQUIRE_BENCH=1``
(CI), where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmarks.fanout import SPECS

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("LIVEPANEL_REQUIRE_BENCH") == "1"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``fanout.py --smoke`` run for the whole module: its JSON results."""
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fanout.py"), "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert out.exists(), f"the smoke run wrote no results:\n{done.stdout}\n{done.stderr}"
    data: dict[str, Any] = json.loads(out.read_text())
    data["returncode"] = done.returncode
    data["output"] = done.stdout + done.stderr
    return data


@pytest.mark.parametrize("target", [name for name, spec in SPECS.items() if not spec.extra])
def test_target_delivers_every_event_and_loses_none(smoke: dict[str, Any], target: str) -> None:
    """Every connection of the target got all M events, in order, none lost."""
    if target in smoke["missing"]:
        absent = ", ".join(smoke["missing"][target])
        if REQUIRE:
            pytest.fail(f"{target}: {absent} not installed, and LIVEPANEL_REQUIRE_BENCH=1")
        pytest.skip(f"{target}: {absent} not installed (pip install -e '.[bench]')")
    rows = [row for row in smoke["rows"] if row["target"] == target]
    assert rows, f"{target} did not run:\n{smoke['output']}"
    for row in rows:
        assert "error" not in row, f"{target}: {row['error']}\n{row.get('log', '')}"
        assert row["delivered"] == row["expected"] == row["clients"] * row["events"]
        assert row["lost"] == 0
        assert row["duplicates"] == 0
        assert row["closed_early"] == 0


def test_the_smoke_run_exits_zero(smoke: dict[str, Any]) -> None:
    """The command itself reports success (what ``make bench-smoke`` relies on)."""
    if smoke["missing"] and not REQUIRE:
        pytest.skip("targets are missing; their own tests say which")
    assert smoke["returncode"] == 0, smoke["output"]
