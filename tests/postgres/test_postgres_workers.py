"""Two uvicorn worker processes on one PostgreSQL, driven by real WebSocket clients: events
from either reach both in one order, a client resumes on the other, a revocation closes on
both, and a ticket raced on both opens once."""

from __future__ import annotations

import concurrent.futures
import json
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection

from livepanel import Tickets
from tests.faults.helpers import ServerProcess, server_processes
from tests.integration.helpers import close_code, expect_welcome, open_ws
from tests.redis.test_redis_workers import nothing_more, receive_events, ticks
from tests.servers import RunningServer

pytestmark = pytest.mark.postgres

APP = "tests.postgres.pg_worker_app:create_app"
SECRET = "p" * 40
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def endpoint(worker: ServerProcess) -> RunningServer:
    return RunningServer("uvicorn", "127.0.0.1", worker.port)


def post(worker: ServerProcess, path: str) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}", method="POST")
    with OPENER.open(request, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def ws(worker: ServerProcess, query: str = "", **kwargs: Any) -> ClientConnection:
    return open_ws(endpoint(worker), query, path="/ws/", **kwargs)


@pytest.fixture
def two_workers(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LIVEPANEL_TICKET_SECRET", SECRET)
    url = f"{postgres_url}&poll_interval=0.5"
    with server_processes(["uvicorn-websockets"] * 2, tmp_path, url, app=APP) as workers:
        yield workers
    for worker in workers:
        assert "Traceback" not in worker.output(), worker.output()


def test_events_published_on_either_worker_reach_both_in_one_order(
    two_workers: list[ServerProcess],
) -> None:
    """A and B each publish, interleaved; a client on A and one on B receive every event
    once, in the same order, with the ids the publishers were given."""
    a, b = two_workers
    with ws(a) as on_a, ws(b) as on_b:
        expect_welcome(on_a)
        expect_welcome(on_b)
        ids = []
        for start in range(0, 40, 10):
            ids += post(a if start % 20 == 0 else b, f"/publish?start={start}&count=10")["ids"]
        seen_a, seen_b = receive_events(on_a, 40), receive_events(on_b, 40)
        assert [e["id"] for e in seen_a] == [e["id"] for e in seen_b] == ids
        assert ticks(seen_a) == list(range(40))
        assert nothing_more(on_a)
        assert nothing_more(on_b)


def test_a_client_resumes_on_the_other_worker_with_exactly_what_it_missed(
    two_workers: list[ServerProcess],
) -> None:
    """Leave A after event 4, miss five published on A, reconnect to B with since: those five,
    then live, nothing twice."""
    a, b = two_workers
    with ws(a) as on_a:
        expect_welcome(on_a)
        post(a, "/publish?start=0&count=5")
        last = receive_events(on_a, 5)[-1]["id"]
    post(a, "/publish?start=5&count=5")
    with ws(b, f"since={quote(last, safe='')}") as on_b:
        expect_welcome(on_b)
        assert ticks(receive_events(on_b, 5)) == [5, 6, 7, 8, 9]
        post(b, "/publish?start=10&count=1")
        assert ticks(receive_events(on_b, 1)) == [10]
        assert nothing_more(on_b)


def test_a_revocation_on_one_worker_closes_the_users_connections_on_both(
    two_workers: list[ServerProcess],
) -> None:
    """disconnect(user="admin") on B: admin's connections on A and on B close with 1008."""
    a, b = two_workers
    with ws(a) as on_a, ws(b) as on_b:
        expect_welcome(on_a)
        expect_welcome(on_b)
        assert post(b, "/disconnect?user=admin")["closed"] == 1
        assert close_code(on_b) == 1008
        assert close_code(on_a, timeout=10) == 1008


def test_a_ticket_raced_on_both_workers_opens_once(two_workers: list[ServerProcess]) -> None:
    """One ticket, a handshake on A and one on B at the same moment, ten times over: each
    ticket opens exactly one connection (the other is a 401)."""
    a, b = two_workers
    tickets = Tickets(SECRET)

    def attempt(worker: ServerProcess, query: str) -> int:
        try:
            with ws(worker, query, headers=None) as conn:
                expect_welcome(conn)
                return 101
        except InvalidStatus as refused:
            return int(refused.response.status_code)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for _ in range(10):
            query = f"ticket={quote(tickets.issue('alice'), safe='')}"
            outcomes = sorted(pool.map(attempt, (a, b), (query, query)))
            assert outcomes == [101, 401]
