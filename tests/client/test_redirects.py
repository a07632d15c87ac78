"""The handshake redirected, as Starlette's ``Mount("/ws")`` does (307 from ``/ws`` to
``/ws/``): the Python client and ``livepanel tail`` follow it within the origin, and refuse
to carry credentials to another origin."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from livepanel import Broadcaster, LivePanelApp
from livepanel.client import MAX_REDIRECTS, HandshakeRejected, connect
from tests.client.helpers import PASSWORD, USER, basic_auth, run
from tests.client.test_cli import PASSWORD_VAR, Tail
from tests.servers import run_server


def mounted(broadcaster: Broadcaster) -> Starlette:
    """The endpoint mounted at /ws the Starlette way: it lives at /ws/."""
    return Starlette(routes=[Mount("/ws", app=LivePanelApp(broadcaster, auth=basic_auth()))])


def test_the_client_follows_a_mounts_redirect_and_receives() -> None:
    """connect(ws://host/ws) on a Mount("/ws") app: 307 to /ws/, followed, then events."""
    broadcaster = Broadcaster()

    async def receive_one(url: str) -> str:
        async with connect(url, username=USER, password=PASSWORD) as client:
            async for event in client:
                return event.type
        raise AssertionError("no event")

    with run_server(mounted(broadcaster), "uvicorn-wsproto") as server:

        async def scenario() -> str:
            import asyncio

            task = asyncio.ensure_future(receive_one(f"{server.ws_url}/ws"))
            for _ in range(200):  # until the client is connected (bounded)
                if broadcaster.connection_count:
                    break
                await asyncio.sleep(0.02)
            broadcaster.publish("session.killed", {"sessionKey": "s1", "agentId": "a1"})
            return await asyncio.wait_for(task, 10)

        assert run(scenario()) == "session.killed"


def test_livepanel_tail_follows_a_mounts_redirect() -> None:
    """`livepanel tail ws://host/ws` against a Mount("/ws") app prints the events."""
    broadcaster = Broadcaster()
    with run_server(mounted(broadcaster), "uvicorn-websockets-sansio") as server:
        tail = Tail(f"{server.ws_url}/ws", "-u", USER, "--password-env", PASSWORD_VAR, "--json")
        try:
            tail.wait_stderr("connected to")
            event = broadcaster.publish("session.killed", {"sessionKey": "s9", "agentId": "a1"})
            (line,) = tail.lines(1)
            assert f'"id":"{event.id}"' in line
        finally:
            tail.close()


class Redirecting:
    """Answers every WebSocket handshake with a redirect to ``location`` (counting them)."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.seen_authorization: list[bool] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        self.seen_authorization.append(any(k == b"authorization" for k, _ in scope["headers"]))
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 307,
                "headers": [(b"location", self.location.encode())],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"", "more_body": False})


def test_a_redirect_to_another_origin_is_not_followed() -> None:
    """A 307 to another host or port is refused with a clear error, and the credentials
    never leave for it."""
    with run_server(Redirecting("ws://127.0.0.2:9/steal"), "uvicorn-websockets-sansio") as server:

        async def scenario() -> None:
            async with connect(
                f"{server.ws_url}/ws", username=USER, password=PASSWORD, reconnect=False
            ):
                pass

        with pytest.raises(HandshakeRejected, match="another origin; not followed"):
            run(scenario())


def test_a_redirect_loop_stops_after_max_redirects() -> None:
    """A server that redirects forever is given up after MAX_REDIRECTS, and says so."""
    app = Redirecting("/ws/again")
    with run_server(app, "uvicorn-websockets-sansio") as server:

        async def scenario() -> None:
            async with connect(
                f"{server.ws_url}/ws", username=USER, password=PASSWORD, reconnect=False
            ):
                pass

        with pytest.raises(HandshakeRejected, match=f"more than {MAX_REDIRECTS} redirects"):
            run(scenario())
    assert len(app.seen_authorization) == MAX_REDIRECTS + 1
    assert all(app.seen_authorization)  # same origin: the credentials go along
