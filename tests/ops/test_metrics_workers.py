"""Metrics of several worker processes on plain ``uvicorn --workers``: the totals add up after
workers die, with no server hook (uvicorn has no gunicorn ``child_exit``)."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import ClientConnection, connect

from livepanel.metrics import forget_dead_workers
from tests.faults.helpers import ROOT
from tests.servers import free_port

USER, PASSWORD = "admin", "workers-secret"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def connections(port: int) -> float | None:
    """``livepanel_connections`` summed over transports, from one scrape; None if none answered."""
    try:
        with OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            page = response.read().decode()
    except OSError:
        return None
    total = 0.0
    for family in text_string_to_metric_families(page):
        if family.name == "livepanel_connections":
            total += sum(sample.value for sample in family.samples)
    return total


def workers_of(pid: int) -> set[int]:
    """The live child processes of ``pid`` (uvicorn's supervisor), from /proc."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children.update(int(child) for child in text)
    return {child for child in children if _a_running_worker(child)}


def _a_running_worker(pid: int) -> bool:
    """A spawned worker (not multiprocessing's resource tracker) that is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in command and stat.rpartition(")")[2].split()[0] != "Z"


def until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


@contextlib.contextmanager
def uvicorn_workers(directory: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """examples/metrics/app.py under ``uvicorn --workers 2`` in multi-process metrics mode."""
    env = os.environ | {
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DASHBOARD_USERNAME": USER,
        "DASHBOARD_PASSWORD": PASSWORD,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    env.pop("LIVEPANEL_BACKEND_URL", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "examples.metrics.app:app"),
                *("--workers", "2", "--port", str(port), "--log-level", "warning"),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_sigkilled_workers_leave_the_connection_total(tmp_path: Path) -> None:
    """Both workers of ``uvicorn --workers 2`` SIGKILLed with dashboards connected: once the
    replacements run and nobody is connected, livepanel_connections reads 0 within a second's
    copy, not what the dead workers last wrote."""
    directory = tmp_path / "multiproc"
    directory.mkdir()
    port = free_port()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    log = tmp_path / "uvicorn.log"
    with uvicorn_workers(directory, port, log) as server:
        until(lambda: connections(port) == 0, 30, f"the workers serve /metrics: {log.read_text()}")
        until(lambda: len(workers_of(server.pid)) == 2, 10, "two workers")
        first = workers_of(server.pid)
        with contextlib.ExitStack() as clients:
            for _ in range(6):
                ws: ClientConnection = clients.enter_context(
                    connect(f"ws://127.0.0.1:{port}/ws", additional_headers=headers)
                )
                ws.recv(timeout=10)  # welcome
            until(lambda: connections(port) == 6, 10, "six connections counted")
            for pid in first:
                os.kill(pid, signal.SIGKILL)
            until(
                lambda: len(workers_of(server.pid) - first) == 2,
                30,
                f"uvicorn replaced both workers: {log.read_text()[-2000:]}",
            )
        until(lambda: connections(port) is not None, 30, "a replacement answers /metrics")
        started = time.monotonic()
        until(lambda: connections(port) == 0, 5, "the dead workers' connections left the total")
        assert time.monotonic() - started < 5
        left = {p.name for p in directory.glob("gauge_live*")}
        assert not any(str(pid) in name for pid in first for name in left), left


def test_only_dead_processes_are_forgotten(tmp_path: Path) -> None:
    """A live process's gauge file stays; a dead one's goes; counters are never touched."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    live = os.getpid()
    for name in (
        f"gauge_livesum_{dead.pid}.db",
        f"gauge_livemax_{dead.pid}.db",
        f"gauge_livesum_{live}.db",
        f"counter_{dead.pid}.db",
    ):
        (tmp_path / name).write_bytes(b"")
    assert forget_dead_workers(tmp_path) == [dead.pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"counter_{dead.pid}.db",
        f"gauge_livesum_{live}.db",
    ]
    assert forget_dead_workers(tmp_path) == []
