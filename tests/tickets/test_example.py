"""examples/tickets/app.py: a logged-in session mints tickets, the socket takes them once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import LogCapture
from tests.examples.test_examples import BASIC, PASSWORD, USER, load, next_event
from tests.integration.helpers import assert_refused, expect_welcome, open_ws, refusal
from tests.servers import RunningServer, run_server


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    monkeypatch.setenv("DASHBOARD_USERNAME", USER)
    monkeypatch.setenv("DASHBOARD_PASSWORD", PASSWORD)
    monkeypatch.setenv("SESSION_SECRET", "a-session-secret-for-the-tests")
    monkeypatch.setenv("LIVEPANEL_TICKET_SECRET", "t" * 32)
    app: Any = load("examples.tickets.app").app
    with run_server(app, "uvicorn-websockets", lifespan=True) as server:
        yield server


def test_a_logged_in_session_gets_tickets_and_connects_with_them(
    example: RunningServer, server_logs: LogCapture
) -> None:
    """Login, a ticket, a connection that receives events; the ticket is refused the second time."""
    with httpx.Client(base_url=example.http_url, timeout=5) as http:
        assert http.post("/api/livepanel-ticket").status_code == 401
        wrong = http.post("/login", json={"username": USER, "password": "nope"})
        assert wrong.status_code == 401
        assert http.post("/login", json={"username": USER, "password": PASSWORD}).is_success
        ticket = http.post("/api/livepanel-ticket").json()["ticket"]
        query = f"ticket={quote(ticket, safe='')}"
        with open_ws(example, query, headers=None) as ws:
            expect_welcome(ws)
            key = http.post("/api/sessions/spawn").json()["sessionKey"]
            assert next_event(ws)["payload"]["sessionKey"] == key
        assert_refused(refusal(example, query, headers=None), 401, "unauthorized")
        assert http.post("/logout").is_success
        assert http.post("/api/livepanel-ticket").status_code == 401
    assert ticket not in server_logs.text()
    assert server_logs.errors() == []


def test_scripts_still_connect_with_basic_credentials(example: RunningServer) -> None:
    """The same endpoint takes Basic credentials (AnyOf) and asks for them in its 401."""
    with open_ws(example, headers=BASIC) as ws:
        expect_welcome(ws)
    refused = refusal(example, headers=None)
    assert refused.response.headers["WWW-Authenticate"].startswith("Basic ")


def test_the_page_is_served_with_the_client(example: RunningServer) -> None:
    """GET / is the single-page app; /livepanel.js the client it imports."""
    with httpx.Client(base_url=example.http_url, timeout=5) as http:
        assert "ticket" in http.get("/").text
        assert http.get("/livepanel.js").headers["content-type"].startswith("text/javascript")
