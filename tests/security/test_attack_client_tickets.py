"""Tickets in the clients' own words, tried as someone who reads what a client prints (a
shared terminal, a CI log, an error tracker): ``livepanel tail`` and the Python client,
against real servers that redirect (Starlette's ``Mount("/ws")``), refuse with 503, or quote
the request back, must never write a ``ticket=`` value in a log line, on stderr or in an
exception's message. A ticket is single-use, but one the client never got to use (a redirect
followed by a refusal) is still good for whoever reads it first."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import livepanel.events.builtin  # noqa: F401 - session.killed
from livepanel import Broadcaster, LivePanelApp, TicketAuth, Tickets
from livepanel.client import HandshakeRejected, connect
from tests.client.test_cli import Tail
from tests.conftest import LogCapture
from tests.redis.redis_helpers import run
from tests.servers import RunningServer, run_server

SECRET = "t" * 32


def mounted(app: LivePanelApp) -> Starlette:
    """The endpoint mounted the Starlette way: /ws answers 307 to /ws/."""
    return Starlette(routes=[Mount("/ws", app=app)])


@pytest.fixture
def client_logs() -> Iterator[LogCapture]:
    handler = LogCapture()
    log = logging.getLogger("livepanel")
    saved = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(saved)


def every_line(handler: LogCapture) -> str:
    return "\n".join(record.getMessage() for record in handler.records)


@pytest.fixture
def draining() -> Iterator[tuple[RunningServer, Tickets]]:
    """A Mount("/ws") app whose endpoint is shutting down: every handshake gets 503."""
    broadcaster = Broadcaster()
    tickets = Tickets(SECRET, broadcaster=broadcaster)
    app = LivePanelApp(broadcaster, auth=TicketAuth(tickets))
    run(app.shutdown(timeout=0.1))
    with run_server(mounted(app), "uvicorn-websockets-sansio") as server:
        yield server, tickets


def test_attack_tail_prints_no_ticket_after_a_redirect_and_a_refusal(
    draining: tuple[RunningServer, Tickets],
) -> None:
    """`livepanel tail ws://host/ws?ticket=T`: 307 to /ws/, followed, then 503. stderr says
    both, and never T."""
    server, tickets = draining
    ticket = tickets.issue("alice")
    tail = Tail(f"{server.ws_url}/ws?ticket={ticket}", password=None)
    try:
        code, stderr = tail.finish(timeout=20)
    finally:
        tail.close()
    assert code == 1, stderr
    assert "redirects to /ws/; following" in stderr
    assert "the server answered 503" in stderr
    assert "ticket=***" in stderr
    assert ticket not in stderr


def test_attack_the_python_client_keeps_the_ticket_out_of_logs_and_errors(
    draining: tuple[RunningServer, Tickets], client_logs: LogCapture
) -> None:
    """connect(url?ticket=T): the redirect log line, the HandshakeRejected's message and
    Client.url show ticket=***, never T."""
    server, tickets = draining
    ticket = tickets.issue("alice")

    async def scenario() -> str:
        client = connect(f"{server.ws_url}/ws?ticket={ticket}", reconnect=False)
        with pytest.raises(HandshakeRejected) as refused:
            async with client:
                pass
        assert refused.value.status == 503
        return f"{refused.value}\n{client.url}"

    shown = run(scenario()) + "\n" + every_line(client_logs)
    assert "redirects to /ws/; following" in shown
    assert "ticket=***" in shown
    assert ticket not in shown


class Echoing:
    """A server (or a proxy in front of one) that refuses every handshake with 503 and a
    livepanel-shaped JSON body quoting the request it got, query string included."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        quoted = f"{scope['path']}?{scope['query_string'].decode()}"
        body = json.dumps({"error": "unavailable", "message": f"cannot serve {quoted}"})
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 503,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send(
            {"type": "websocket.http.response.body", "body": body.encode(), "more_body": False}
        )


def test_attack_a_server_quoting_the_ticket_back_does_not_get_it_printed(
    client_logs: LogCapture,
) -> None:
    """The refusal's own message holds ?ticket=T: the client's exception and its reconnect
    log lines carry ticket=***, never T, through every retry."""
    ticket = "v1.alice.0123456789abcdef"
    with run_server(Echoing(), "uvicorn-websockets-sansio") as server:

        async def scenario() -> str:
            client = connect(f"{server.ws_url}/ws?ticket={ticket}", reconnect=False)
            with pytest.raises(HandshakeRejected) as refused:
                async with client:
                    pass
            return str(refused.value)

        message = run(scenario())
    assert "cannot serve /ws?ticket=***" in message
    assert ticket not in message
    assert ticket not in every_line(client_logs)


def test_a_ticket_still_connects_through_the_redirect() -> None:
    """The masking is only in what is shown: tail with a good ticket behind Mount("/ws")
    follows the redirect, connects and prints events; stderr names the URL with
    ticket=***."""
    broadcaster = Broadcaster()
    tickets = Tickets(SECRET, broadcaster=broadcaster)
    app = LivePanelApp(broadcaster, auth=TicketAuth(tickets))
    with run_server(mounted(app), "uvicorn-wsproto") as server:
        ticket = tickets.issue("alice")
        tail = Tail(f"{server.ws_url}/ws?ticket={ticket}", "--json", password=None)
        try:
            tail.wait_stderr("connected to")
            event = broadcaster.publish("session.killed", {"sessionKey": "s1", "agentId": "a1"})
            (line,) = tail.lines(1)
            assert f'"id":"{event.id}"' in line
        finally:
            tail.close()
        _, stderr = tail.finish()
    assert "ticket=***" in stderr
    assert ticket not in stderr
