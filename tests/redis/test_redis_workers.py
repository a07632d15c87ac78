"""Two uvicorn server processes sharing one Redis stream, driven by real WebSocket clients."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.redis.redis_helpers import RedisServer, free_port

pytestmark = pytest.mark.redis

ROOT = Path(__file__).parents[2]  # the repository, so tests.redis imports
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy


@dataclass
class Worker:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws(self, query: str = "") -> ClientConnection:
        return connect(f"ws://127.0.0.1:{self.port}/ws/{query}", proxy=None, open_timeout=5)

    def publish(self, start: int, count: int, kind: str = "") -> list[str]:
        request = urllib.request.Request(
            self.url(f"/publish?start={start}&count={count}&kind={kind}"), method="POST"
        )
        with OPENER.open(request, timeout=10) as response:
            ids: list[str] = json.load(response)["ids"]
        return ids

    def answers(self) -> bool:
        with contextlib.suppress(OSError), OPENER.open(self.url("/health"), timeout=1) as response:
            return bool(response.status == 200)
        return False


@contextlib.contextmanager
def workers(redis_url: str, directory: Path, count: int = 2) -> Iterator[list[Worker]]:
    """Start ``count`` uvicorn processes on the same stream; stop them at the end."""
    env = {**os.environ, "LIVEPANEL_BACKEND_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    started: list[Worker] = []
    try:
        for i in range(count):
            port = free_port()
            log = directory / f"worker-{i}.log"
            command = [
                *(sys.executable, "-m", "uvicorn", "tests.redis.redis_worker_app:create_app"),
                *("--factory", "--app-dir", str(ROOT), "--host", "127.0.0.1", "--port", str(port)),
                *("--lifespan", "on", "--log-level", "warning"),
            ]
            with log.open("wb") as out:
                process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            started.append(Worker(port, process, log))
        deadline = time.monotonic() + 20
        for worker in started:
            while not worker.answers():
                if worker.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"worker on {worker.port} did not start:\n{worker.log.read_text()}")
                time.sleep(0.05)
        yield started
    finally:
        for worker in started:
            worker.process.terminate()
        for worker in started:
            try:
                worker.process.wait(10)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(5)
    for worker in started:
        text = worker.log.read_text()
        assert "Traceback" not in text, text


def receive_events(ws: ClientConnection, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next ``count`` broadcast events (frames with an id), skipping welcome and ping."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if "id" in frame:
            events.append(frame)
        else:
            assert frame["type"] in ("welcome", "ping"), frame
    return events


def welcome(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=5))
    assert frame["type"] == "welcome", frame
    return frame


def nothing_more(ws: ClientConnection, within: float = 0.3) -> bool:
    """True when no broadcast event arrives ``within`` seconds."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            return True
        if "id" in frame:
            return False
    return True


def ticks(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["payload"]["n"]) for e in events]


def test_events_published_in_one_process_reach_clients_of_another(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A client on process A receives, in order and once, what process B publishes."""
    with workers(redis_server.url, tmp_path) as (a, b), a.ws() as ws:
        welcome(ws)
        ids = b.publish(0, 20)
        events = receive_events(ws, 20)
        assert ticks(events) == list(range(20))
        assert [e["id"] for e in events] == ids
        assert nothing_more(ws)


def test_a_client_resumes_on_another_process_with_exactly_what_it_missed(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Disconnect from A, reconnect to B with since=<last id>: the missed events, then live."""
    with workers(redis_server.url, tmp_path) as (a, b):
        with a.ws() as ws:
            welcome(ws)
            a.publish(0, 10)
            seen = receive_events(ws, 10)
        last_id = seen[-1]["id"]
        missed = a.publish(10, 10)
        with b.ws(f"?since={last_id}") as ws:
            welcome(ws)
            replayed = receive_events(ws, 10)
            assert ticks(replayed) == list(range(10, 20))
            assert [e["id"] for e in replayed] == missed
            b.publish(20, 1)
            assert ticks(receive_events(ws, 1)) == [20]
            assert nothing_more(ws)
