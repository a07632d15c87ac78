"""The fan-out benchmark's smoke run: every target starts, delivers every event, loses none.

Nothing here is timed; the numbers of a smoke run mean nothing. A target whose
peer package is missing is skipped, except under ``LIVEPANEL_REQUIRE_BENCH=1``
(CI), where it fails.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
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


def _fanout(*args: str, timeout: float = 60) -> tuple[dict[str, Any], str]:
    """Run ``fanout.py`` with ``args`` (JSON to a temporary file): its results and output."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run.json"
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "fanout.py"), *args, "--json", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = done.stdout + done.stderr
        assert out.exists(), f"no results:\n{output}"
        data: dict[str, Any] = json.loads(out.read_text())
    data["returncode"] = done.returncode
    return data, output


def _delivered_everything(row: dict[str, Any]) -> None:
    assert "error" not in row, f"{row['target']}: {row['error']}\n{row.get('log', '')}"
    assert row["delivered"] == row["expected"] == row["clients"] * row["events"], row
    assert row["lost"] == row["duplicates"] == row["closed_early"] == 0, row
    assert row["complete_connections"] == row["clients"], row


# the targets whose servers accept permessage-deflate by default (granian's does not)
DEFLATE_TARGETS = ("livepanel", "livepanel-hypercorn", "websockets", "socketio", "livepanel-state")


@pytest.fixture(scope="module")
def deflate_smoke() -> tuple[dict[str, Any], str]:
    """Clients offering permessage-deflate as browsers do, 20 connections, 40 events."""
    return _fanout(
        "--deflate",
        *("--targets", ",".join(DEFLATE_TARGETS), "--clients", "20", "--events", "40"),
        *("--repeat", "1", "--jobs", "3"),
    )


@pytest.fixture(scope="module")
def procs_smoke() -> tuple[dict[str, Any], str]:
    """The same connections split over two client processes, no compression."""
    return _fanout(
        *("--client-procs", "2", "--targets", "livepanel,websockets,socketio,livepanel-state"),
        *("--clients", "20", "--events", "40", "--repeat", "1", "--jobs", "3"),
    )


@pytest.mark.parametrize("target", DEFLATE_TARGETS)
def test_deflate_is_negotiated_inflated_and_smaller_on_the_wire(
    deflate_smoke: tuple[dict[str, Any], str],
    procs_smoke: tuple[dict[str, Any], str],
    smoke: dict[str, Any],
    target: str,
) -> None:
    """Every connection negotiated permessage-deflate; every event arrived, so every
    compressed frame was inflated (a message's seq is only found in inflated text); and
    fewer bytes crossed the wire per message than without compression."""
    data, output = deflate_smoke
    if SPECS[target].missing():
        pytest.skip(f"{target}: not installed")
    [row] = [r for r in data["rows"] if r["target"] == target] or [None]
    assert row is not None, output
    _delivered_everything(row)
    assert row["deflate_offered"] is True
    assert row["deflate"] is True, row
    assert row["deflate_connections"] == row["clients"], row
    assert row["deflate_params"] is not None
    plain = [r for r in smoke["rows"] + procs_smoke[0]["rows"] if r["target"] == target]
    assert plain, f"{target}: no uncompressed run to compare with"
    assert not plain[0]["deflate"]
    assert row["wire_bytes_per_msg"] < plain[0]["wire_bytes_per_msg"] / 2, (row, plain[0])
    if target == "livepanel-state":  # the state frame (1,000 sessions) before the first event
        assert plain[0]["preamble_bytes_per_conn"] > 50_000, plain[0]
        assert row["preamble_bytes_per_conn"] < plain[0]["preamble_bytes_per_conn"] / 3


def test_client_processes_split_the_connections_and_merge_the_counts(
    procs_smoke: tuple[dict[str, Any], str],
) -> None:
    """Two client processes each open their share; the merged row still has every event
    on every connection, and a latency sample for each."""
    data, output = procs_smoke
    assert data["rows"], output
    for row in data["rows"]:
        if SPECS[row["target"]].missing():
            continue
        _delivered_everything(row)
        assert row["client_procs"] == 2
        assert len(row["client_connect_s"]) == 2
        assert row["p99_ms"] >= row["p50_ms"] > 0
    assert data["returncode"] == 0, output


def test_too_low_a_file_limit_fails_before_anything_starts() -> None:
    """A hard RLIMIT_NOFILE below what N connections need: a clear message, no run."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "benchmarks" / "fanout.py"), "--targets", "livepanel"),
            *("--clients", "1000", "--events", "1", "--repeat", "1"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=low_limit,
    )
    assert done.returncode != 0
    assert "hard limit (RLIMIT_NOFILE) is 256" in done.stderr, done.stderr
    assert "N=1000" not in done.stdout  # no target was started


def test_a_stalled_client_holds_up_a_loop_of_awaited_sends_but_not_livepanel() -> None:
    """The adversary of a broadcast: one more connection that stops reading once
    welcomed. livepanel's other connections still get every event, in order; a bare
    ASGI loop that awaits each ``send`` in turn (what the FastAPI docs' manager does)
    stops at the stalled client once the buffers between them are full, which shows the
    stalled connection really stalls. The run counts what the others lost as a result."""
    data, output = _fanout(
        *("--stalled", "1", "--targets", "livepanel,asgi-bare"),
        # 40,000 events of about 200 bytes: more than the kernel's buffers hold on loopback
        # (up to 4 MiB of send buffer) and the server's transport buffer (64 KiB)
        *("--clients", "5", "--events", "40000", "--repeat", "1", "--jobs", "2"),
        timeout=100,
    )
    rows = {row["target"]: row for row in data["rows"]}
    assert set(rows) == {"livepanel", "asgi-bare"}, output
    for row in rows.values():
        assert "error" not in row, f"{row['target']}: {row['error']}\n{row.get('log', '')}"
        assert row["stalled"] == 1
        assert row["expected"] == 5 * 40_000
    _delivered_everything(rows["livepanel"])
    bare = rows["asgi-bare"]
    assert bare["lost"] > 0, bare
    assert bare["complete_connections"] == 0, bare
    assert bare["publish_seconds"] is None, bare  # its publisher never got past the stall
    assert data["stalled"] == 1
    assert data["returncode"] == 0, output
