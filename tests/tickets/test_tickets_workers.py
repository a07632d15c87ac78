"""A ticket is accepted once across every worker: two uvicorn processes on one private Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from livepanel import Broadcaster, TicketAuth, Tickets
from livepanel.backends.redis import RedisBackend
from tests.faults.helpers import server_processes
from tests.integration.helpers import assert_refused, expect_welcome, open_ws, refusal
from tests.redis.redis_helpers import RedisServer, documented_acl, free_port, run, started
from tests.servers import RunningServer

SECRET = "w" * 40
APP = "tests.tickets.ticket_worker_app:create_app"


def endpoint(port: int) -> RunningServer:
    return RunningServer("uvicorn", "127.0.0.1", port)


def test_a_ticket_used_on_one_worker_is_refused_on_another(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker B refuses (401) the ticket worker A accepted; a fresh one works on B."""
    monkeypatch.setenv("LIVEPANEL_TICKET_SECRET", SECRET)
    tickets = Tickets(SECRET)  # issuing needs no backend
    with server_processes(["uvicorn-websockets"] * 2, tmp_path, redis_url, app=APP) as (a, b):
        text = tickets.issue("alice", audiences=["team:ops"])
        query = f"ticket={quote(text, safe='')}"
        with open_ws(endpoint(a.port), query, headers=None, path="/ws/") as ws:
            expect_welcome(ws)
        refused = refusal(endpoint(b.port), query, headers=None, path="/ws/")
        assert_refused(refused, 401, "unauthorized")
        assert_refused(
            refusal(endpoint(a.port), query, headers=None, path="/ws/"), 401, "unauthorized"
        )
        fresh = f"ticket={quote(tickets.issue('alice'), safe='')}"
        with open_ws(endpoint(b.port), fresh, headers=None, path="/ws/") as ws:
            expect_welcome(ws)
    for server in (a, b):
        output = server.output()
        assert "cannot be checked" not in output  # refused as used, not for an outage
        assert "ticket=[redacted]" in output  # uvicorn logged the handshakes, without the ticket
        assert text not in output
        assert text.partition(".")[2] not in output


def test_a_ticket_is_refused_while_redis_cannot_say_whether_it_was_used() -> None:
    """With Redis unreachable a valid ticket is refused (fail closed), not accepted unchecked."""
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    tickets = Tickets(SECRET, broadcaster=Broadcaster(backend))
    auth = TicketAuth(tickets)
    scope: Any = {
        "type": "websocket",
        "headers": [],
        "query_string": b"ticket=" + quote(tickets.issue("alice"), safe="").encode(),
    }
    assert run(auth(scope)) is None


def test_the_documented_acl_user_may_consume_tickets(redis_server: RedisServer) -> None:
    """docs/redis-production.md's ACL allows the SET that consumes a ticket: once, then refused."""
    password = "acl-s3cret"
    with redis.Redis(port=redis_server.port, socket_timeout=5) as admin:
        admin.execute_command(*documented_acl(password)[0])
    url = f"redis://livepanel:{password}@127.0.0.1:{redis_server.port}/0"
    tickets = Tickets(SECRET, broadcaster=Broadcaster(url))

    async def scenario() -> tuple[object, object]:
        async with started(tickets.broadcaster):
            text = tickets.issue("alice")
            return await tickets.redeem(text), await tickets.redeem(text)

    first, second = run(scenario())
    assert first is not None
    assert second is None
    with redis.Redis(port=redis_server.port, socket_timeout=5) as admin:
        assert [entry for entry in admin.acl_log() if entry.get("username") == "livepanel"] == []
