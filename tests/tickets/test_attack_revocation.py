"""Attacks on revocation and on the throttle through tickets, on real servers (uvicorn with
websockets and wsproto, hypercorn): a handshake that authenticated before ``disconnect()``
(issue: it opened afterwards and received the user's events), a ticket issued before it
(issue: accepted afterwards), and garbage tickets in image tags (issue: they locked the
visitor's address out)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from livepanel import Broadcaster, Tickets
from tests.integration.helpers import (
    TIMEOUT,
    Serve,
    assert_refused,
    open_ws,
    recv_json,
    refusal,
)
from tests.tickets.test_tickets import SECRET, connects, ticket_app, with_ticket


def disconnect_from_here(broadcaster: Broadcaster, user: str) -> int:
    """``await broadcaster.disconnect(user=...)`` on the loop the broadcaster runs on."""
    loop = broadcaster.backend_loop
    assert loop is not None
    done: Future[int] = asyncio.run_coroutine_threadsafe(broadcaster.disconnect(user=user), loop)
    return done.result(TIMEOUT)


def read_into(ws: Any, frames: list[dict[str, Any]]) -> None:
    """Read frames into ``frames`` until the server closes (at most 10)."""
    for _ in range(10):
        frames.append(recv_json(ws))


def test_attack_a_handshake_in_flight_when_its_user_is_revoked_never_gets_her_events(
    serve: Serve,
) -> None:
    """alice's handshake is resolving her audiences when disconnect(user="alice") runs: her
    connection is closed with 1008 as it opens and never receives an event of hers."""
    tickets = Tickets(SECRET, broadcaster=Broadcaster())
    broadcaster = tickets.broadcaster
    resolving, go_on = threading.Event(), threading.Event()

    async def slow_audiences(principal: Any, scope: Any) -> set[str]:
        if principal.username != "alice":
            return {f"user:{principal.username}"}
        resolving.set()
        for _ in range(500):  # bounded: 5 s at most
            if go_on.is_set():
                break
            await asyncio.sleep(0.01)
        return {"user:alice"}

    server = serve(ticket_app(tickets, audiences=slow_audiences))
    assert connects(server, with_ticket(tickets.issue("bob")))  # the backend runs; bob is fine
    opened: Future[Any] = Future()

    def connect() -> None:
        try:
            opened.set_result(open_ws(server, with_ticket(tickets.issue("alice")), headers=None))
        except Exception as exc:  # a refusal is a fine answer too
            opened.set_exception(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    assert resolving.wait(TIMEOUT)
    assert disconnect_from_here(broadcaster, "alice") == 0  # nothing open yet to close
    go_on.set()
    thread.join(TIMEOUT)
    try:
        ws = opened.result(TIMEOUT)
    except Exception:  # refused at the handshake: she never gets in
        return
    with ws:  # its welcome may be dropped with everything queued once it is closed
        broadcaster.publish("session.killed", {"sessionKey": "s1", "agentId": "a"},
                            audience={"user:alice"})  # fmt: skip
        frames: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as closed:
            read_into(ws, frames)
    assert not [frame for frame in frames if "id" in frame], frames
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


def test_attack_a_ticket_issued_before_a_revocation_is_refused_after_it(serve: Serve) -> None:
    """A ticket issued to alice, then disconnect(user="alice"): the ticket is refused with
    401; a ticket issued after the revocation is accepted; bob's ticket is untouched."""
    tickets = Tickets(SECRET, broadcaster=Broadcaster())
    server = serve(ticket_app(tickets))
    before, bobs = tickets.issue("alice"), tickets.issue("bob")
    assert connects(server, with_ticket(tickets.issue("carol")))  # the backend runs
    disconnect_from_here(tickets.broadcaster, "alice")
    time.sleep(0.01)  # a ticket issued now is newer than the order, whatever the clock's grain
    assert_refused(refusal(server, with_ticket(before), headers=None), 401, "unauthorized")
    assert connects(server, with_ticket(bobs))
    assert connects(server, with_ticket(tickets.issue("alice")))


def test_attack_a_ticket_revoked_by_audience_is_refused(serve: Serve) -> None:
    """disconnect(audience="team:ops") refuses the tickets issued before it to that team."""
    tickets = Tickets(SECRET, broadcaster=Broadcaster())
    server = serve(ticket_app(tickets))
    ops = tickets.issue("dave", audiences=["team:ops"])
    assert connects(server, with_ticket(tickets.issue("carol")))
    loop = tickets.broadcaster.backend_loop
    assert loop is not None
    order = tickets.broadcaster.disconnect(audience="team:ops")
    asyncio.run_coroutine_threadsafe(order, loop).result(TIMEOUT)
    assert_refused(refusal(server, with_ticket(ops), headers=None), 401, "unauthorized")


# ---------------------------------------------------------------------- image tags

IMAGE = {  # what a browser sends for <img src="https://panel.example.com/ws?ticket=x">
    "Accept": "image/avif,image/webp,image/apng,*/*;q=0.8",
    "Sec-Fetch-Site": "same-site",
    "Sec-Fetch-Mode": "no-cors",
    "Sec-Fetch-Dest": "image",
}


def image_request(server: Any, query: str, headers: dict[str, str] | None = None) -> int:
    """A GET of the endpoint as an image tag makes it: the status it gets."""
    url = f"{server.http_url}/ws?{query}"
    answer = httpx.get(url, headers=headers or IMAGE, timeout=TIMEOUT, trust_env=False)
    return answer.status_code


def test_attack_garbage_tickets_in_image_tags_do_not_lock_the_visitor_out(serve: Serve) -> None:
    """20 image tags on a sibling subdomain load the endpoint with ?ticket=x (and 20 more
    from a browser without Fetch Metadata): each gets 401, and the visitor's real handshake
    with a valid ticket, from the same address, is then accepted, not 429."""
    tickets = Tickets(SECRET, broadcaster=Broadcaster())
    server = serve(ticket_app(tickets, auth_failure_limit=20))
    for n in range(20):
        assert image_request(server, f"ticket=x{n}") == 401
        assert image_request(server, f"ticket=y{n}", {"Accept": "image/*"}) == 401
    assert connects(server, with_ticket(tickets.issue("alice")))


def test_attack_a_valid_ticket_in_an_image_tag_is_not_spent(serve: Serve) -> None:
    """A page that learns a ticket and loads it in an image tag does not spend it: the
    visitor's handshake with it is still accepted."""
    tickets = Tickets(SECRET, broadcaster=Broadcaster())
    server = serve(ticket_app(tickets))
    text = tickets.issue("alice")
    assert image_request(server, with_ticket(text)) == 426  # checked: it is a valid ticket
    assert connects(server, with_ticket(text))


def test_attack_guessing_tickets_through_real_handshakes_stays_throttled(serve: Serve) -> None:
    """Guesses through WebSocket handshakes and event-stream requests still count: after 20
    the address gets 429, even with a valid ticket."""
    tickets = Tickets(SECRET, broadcaster=Broadcaster())
    server = serve(ticket_app(tickets, auth_failure_limit=20))
    stream = {"Accept": "text/event-stream"}
    for n in range(10):
        assert_refused(refusal(server, f"ticket=guess{n}", headers=None), 401, "unauthorized")
        assert image_request(server, f"ticket=sse{n}", stream) == 401
    locked = refusal(server, with_ticket(tickets.issue("alice")), headers=None)
    assert_refused(locked, 429, "too_many_failures")


def test_a_revoked_ticket_is_refused_in_an_image_tag_too(serve: Serve) -> None:
    """The probe of a revoked ticket says 401, as its handshake would."""
    tickets = Tickets(SECRET, broadcaster=Broadcaster())
    server = serve(ticket_app(tickets))
    text = tickets.issue("alice")
    assert connects(server, with_ticket(tickets.issue("carol")))
    disconnect_from_here(tickets.broadcaster, "alice")
    assert image_request(server, with_ticket(text)) == 401
