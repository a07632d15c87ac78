"""One real server of each kind per session; each test plugs its own app into it."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.helpers import Serve
from tests.servers import SERVERS, RunningServer, run_server


class Switchboard:
    """The ASGI app a shared server runs: it hands every request to the current test's app."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.app
        if app is not None:
            await app(scope, receive, send)
        elif scope["type"] == "websocket":
            # a late handshake left over from a finished test (a busy machine delays them)
            await receive()
            await send({"type": "websocket.close", "code": 1013})
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="session", params=SERVERS)
def server_kind(request: pytest.FixtureRequest) -> str:
    """Each integration test runs once per ASGI server."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def _plain_server(server_kind: str) -> Iterator[tuple[Switchboard, RunningServer]]:
    board = Switchboard()
    with run_server(board, server_kind) as server:
        yield board, server


def _plugged(board: Switchboard, server: RunningServer) -> Iterator[Serve]:
    """A ``serve(app)`` function for one test; the app is unplugged when the test ends."""

    def plug(app: Any) -> RunningServer:
        board.app = app
        return server

    yield plug
    board.app = None


@pytest.fixture
def serve(_plain_server: tuple[Switchboard, RunningServer]) -> Iterator[Serve]:
    """``serve(app)`` makes the server of this kind run ``app``; returns the running server."""
    yield from _plugged(*_plain_server)


@pytest.fixture(scope="session")
def _tls_server(
    server_kind: str, tls_certificate: tuple[str, str]
) -> Iterator[tuple[Switchboard, RunningServer]]:
    board = Switchboard()
    cert, key = tls_certificate
    with run_server(board, server_kind, certfile=cert, keyfile=key) as server:
        yield board, server


@pytest.fixture
def serve_tls(_tls_server: tuple[Switchboard, RunningServer]) -> Iterator[Serve]:
    """Like ``serve``, on a server of this kind speaking TLS (``wss://``, ``https://``)."""
    yield from _plugged(*_tls_server)


@pytest.fixture(scope="session")
def client_tls(tls_certificate: tuple[str, str]) -> ssl.SSLContext:
    """A client context trusting the test certificate."""
    return ssl.create_default_context(cafile=tls_certificate[0])
