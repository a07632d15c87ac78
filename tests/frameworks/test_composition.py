"""Every documented feature at once, as a user would switch them on, on two workers.

The Quickstart's FastAPI app with ``app.add_middleware(LivePanelMiddleware, ...)``
(tests/frameworks/composition_app.py) with state on connect, audiences,
tickets, metrics, health, presence, tracing, SSE and the Redis backend, run by
``uvicorn --workers 2`` on a real Redis, and checked end to end with real
clients, each feature while all the others are on. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection

from tests.integration.helpers import (
    assert_refused,
    basic,
    expect_frame,
    expect_welcome,
    open_ws,
    recv_events,
)
from tests.servers import RunningServer, free_port
from tests.sse.test_sse import STREAM, Messages

pytestmark = pytest.mark.redis

ROOT = Path(__file__).parents[2]
APP = "tests.frameworks.composition_app:app"
USER, PASSWORD = "admin", "quick:start"
AUTH = {"Authorization": basic(USER, PASSWORD)}
SECRET = "composition-" * 4
SESSIONS = "types=session.*"  # presence.changed events come and go as clients do
T = TypeVar("T")


@dataclass
class Workers:
    """``uvicorn --workers 2`` on one port: each new TCP connection lands on either worker,
    and every response names its worker in ``X-Worker``."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def server(self) -> RunningServer:
        return RunningServer("uvicorn", "127.0.0.1", self.port)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request on a connection of its own (so either worker may answer)."""
        with httpx.Client(base_url=self.base, timeout=5, trust_env=False) as client:
            return client.request(method, path, **kwargs)

    def on_each(self, path: str, pids: set[str], **kwargs: Any) -> dict[str, httpx.Response]:
        """``GET path`` until each worker has answered; their answers by worker."""
        answers: dict[str, httpx.Response] = {}
        for _ in range(200):
            response = self.request("GET", path, **kwargs)
            answers.setdefault(response.headers["x-worker"], response)
            if set(answers) == pids:
                return answers
        raise AssertionError(f"GET {path} never reached every worker: {sorted(answers)}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def two_workers(redis_url: str, directory: Path) -> Iterator[tuple[Workers, set[str]]]:
    """Start the app under ``uvicorn --workers 2``; yield it once both workers answer, with
    their process ids."""
    path = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "PYTHONUNBUFFERED": "1",
        "LIVEPANEL_BACKEND_URL": redis_url,
        "DASHBOARD_USERNAME": USER,
        "DASHBOARD_PASSWORD": PASSWORD,
        "LIVEPANEL_TICKET_SECRET": SECRET,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    log = directory / "uvicorn.log"
    command = [
        *(sys.executable, "-m", "uvicorn", APP, "--workers", "2", "--app-dir", str(ROOT)),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "info"),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    workers = Workers(port, process, log)
    try:
        pids: set[str] = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2:
            assert process.poll() is None, f"uvicorn exited:\n{workers.output()}"
            assert time.monotonic() < deadline, f"two workers did not answer:\n{workers.output()}"
            with contextlib.suppress(httpx.TransportError):
                pids.add(workers.request("GET", "/healthz").headers["x-worker"])
            time.sleep(0.02)
        yield workers, pids
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def one_per_worker(
    stack: contextlib.ExitStack,
    pids: set[str],
    open_one: Callable[[contextlib.ExitStack], T],
    worker_of: Callable[[T], str],
) -> dict[str, T]:
    """Open connections until one is open on each worker; the others are closed again."""
    kept: dict[str, T] = {}
    for _ in range(100):
        with contextlib.ExitStack() as attempt:
            opened = open_one(attempt)
            worker = worker_of(opened)
            if worker not in kept:
                kept[worker] = opened
                stack.enter_context(attempt.pop_all())
        if set(kept) == pids:
            return kept
    raise AssertionError(f"connections reached only workers {sorted(kept)} of {sorted(pids)}")


def websocket(workers: Workers, query: str = "", headers: Any = AUTH) -> Callable[..., Any]:
    def open_one(stack: contextlib.ExitStack) -> ClientConnection:
        ws = stack.enter_context(open_ws(workers.server, query, headers=headers))
        expect_welcome(ws)
        return ws

    return open_one


def ws_worker(ws: ClientConnection) -> str:
    assert ws.response is not None
    return str(ws.response.headers["x-worker"])


@dataclass
class Stream:
    """One event stream, read as the EventSource spec reads it."""

    response: httpx.Response
    messages: Messages


def event_stream(workers: Workers) -> Callable[[contextlib.ExitStack], Stream]:
    def open_one(stack: contextlib.ExitStack) -> Stream:
        client = stack.enter_context(httpx.Client(timeout=5, trust_env=False))
        response = stack.enter_context(
            client.stream("GET", f"{workers.base}/ws?{SESSIONS}", headers={**STREAM, **AUTH})
        )
        assert response.status_code == 200
        messages = Messages(response)
        assert messages.next()["event"] == "welcome"
        return Stream(response, messages)

    return open_one


def publish(workers: Workers, audience: str | None = None) -> str:
    """The Quickstart's REST call: a session is spawned and announced; its key."""
    params = {"agent": "atlas"} | ({"audience": audience} if audience else {})
    response = workers.request("POST", "/api/sessions", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return str(response.json()["sessionKey"])


def ticket(workers: Workers, holder: str, team: str) -> str:
    response = workers.request(
        "POST", "/api/livepanel-ticket", params={"holder": holder, "team": team}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    return "ticket=" + quote(response.json()["ticket"], safe="")


def keys(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["payload"]["sessionKey"] for frame in frames]


def sample(page: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text page (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, page, flags=re.M)
    return float(found.group(1)) if found else 0.0


def eventually(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def test_every_feature_works_with_every_other_on_two_workers(
    redis_url: str, tmp_path: Path
) -> None:
    """Events reach a WebSocket and an event stream on each worker, audiences filter them,
    a ticket is accepted once across workers, state arrives filtered, and /metrics,
    /healthz, presence and the traces all report what happened."""
    with two_workers(redis_url, tmp_path) as (workers, pids), contextlib.ExitStack() as stack:
        sockets = one_per_worker(stack, pids, websocket(workers, SESSIONS), ws_worker)
        streams = one_per_worker(
            stack, pids, event_stream(workers), lambda s: s.response.headers["x-worker"]
        )
        alices_ticket = ticket(workers, "alice", "ops")
        alice = stack.enter_context(
            open_ws(workers.server, f"{alices_ticket}&{SESSIONS}", headers=None)
        )
        expect_welcome(alice)

        # live events, on both transports and both workers; the audience filters them
        first, *others = sockets.values()
        published = []
        for audience in ("team:dev", "team:ops", None):
            published.append(publish(workers, audience))
            # in the stream before the next one is published, whichever worker publishes it
            assert keys(recv_events(first, 1)) == published[-1:]
        _, for_ops, for_all = published
        for ws in others:
            assert keys(recv_events(ws, 3)) == published
        for stream in streams.values():
            events = [stream.messages.next_event() for _ in published]
            assert [e["event"] for e in events] == ["session.created"] * 3
            assert [e["data"]["payload"]["sessionKey"] for e in events] == published
            assert [e["id"] for e in events] == [e["data"]["id"] for e in events]
        assert keys(recv_events(alice, 2)) == [for_ops, for_all]  # never the dev team's

        # a ticket is accepted once, on any worker
        refused_by: set[str] = set()
        for _ in range(100):
            with pytest.raises(InvalidStatus) as info:
                open_ws(workers.server, alices_ticket, headers=None).close()
            assert_refused(info.value, 401, "unauthorized")
            refused_by.add(info.value.response.headers["x-worker"])
            if refused_by == pids:
                break
        assert refused_by == pids

        # state on connect, on each worker, filtered by the connection's audience
        with_state = websocket(workers, f"state=1&{SESSIONS}")
        for ws in one_per_worker(stack, pids, with_state, ws_worker).values():
            state = expect_frame(ws, "state")["payload"]
            assert set(keys(state["collections"]["sessions"]["entries"])) == set(published)
        fresh = stack.enter_context(
            open_ws(workers.server, f"{ticket(workers, 'alice', 'ops')}&state=1", headers=None)
        )
        expect_welcome(fresh)
        state = expect_frame(fresh, "state")["payload"]
        assert set(keys(state["collections"]["sessions"]["entries"])) == {for_ops, for_all}

        # metrics: 200 on each worker, with its accepted handshakes and its event stream
        for worker, page in workers.on_each("/metrics", pids).items():
            assert page.status_code == 200, page.text
            assert sample(page.text, "livepanel_handshakes_total", status="101") >= 2, worker
            assert sample(page.text, "livepanel_connections", transport="sse") >= 1, worker
        # health: 200 on each worker
        for worker, health in workers.on_each("/healthz", pids).items():
            assert health.status_code == 200, (worker, health.text)
            report = health.json()
            assert (report["ok"], report["backend"], report["draining"]) == (True, "ok", False)
            assert report["connections"] >= 1, report

        # presence: who is connected, across both workers
        def both_users() -> dict[str, int] | None:
            view = workers.request("GET", "/presence").json()
            users = {entry["user"]: entry["connections"] for entry in view["users"]}
            return users if {"admin", "alice"} <= set(users) else None

        users = eventually(both_users, 10, "admin and alice in presence()")
        assert users["admin"] >= 4  # a WebSocket and an event stream on each worker

        # traces: the request published under its span; each worker delivered, linked
        def delivered() -> dict[str, list[str]] | None:
            spans = {w: r.json() for w, r in workers.on_each("/spans", pids).items()}
            done = all(names.count("deliver session.created") == 3 for names in spans.values())
            return spans if done else None

        spans = eventually(delivered, 10, "a delivery span per event on each worker")
        publishes = sum(names.count("publish session.created") for names in spans.values())
        requests = sum(names.count("POST /api/sessions") for names in spans.values())
        assert publishes == requests == 3

    output = workers.output()
    assert "Traceback" not in output, output
    assert "ticket=[redacted]" in output  # uvicorn logged the handshakes, not the tickets
    assert alices_ticket.partition("=")[2] not in output
