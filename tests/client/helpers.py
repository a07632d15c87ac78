"""Shared pieces of the client tests: real servers on a chosen port, a collecting consumer,
and a scripted wsproto server for the cases a real livepanel never produces on demand."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.events import Event as WSEvent

from livepanel import BasicAuth, Event
from livepanel.client import Client, ResumeUnavailable
from tests import servers

T = TypeVar("T")

USER, PASSWORD = "admin", "pa:ss"
FAST = {"backoff_initial": 0.02, "backoff_max": 0.1, "open_timeout": 5.0}
"""Client options that keep reconnect tests quick."""


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run one test scenario in a fresh loop, never longer than ``timeout``."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def basic_auth(calls: list[str] | None = None, accept: bool = True) -> BasicAuth:
    """Accepts USER/PASSWORD (or nobody); records each handshake's user in ``calls``."""

    def verify(username: str, password: str) -> bool:
        if calls is not None:
            calls.append(username)
        return accept and (username, password) == (USER, PASSWORD)

    return BasicAuth(verify)


@contextlib.asynccontextmanager
async def served(
    app: Any, kind: str, *, port: int | None = None, **kwargs: Any
) -> AsyncIterator[servers.RunningServer]:
    """``run_server`` from async code (its start and stop block), optionally on ``port``."""
    manager = servers.run_server(app, kind, port=port, **kwargs)
    server = await asyncio.to_thread(manager.__enter__)
    try:
        yield server
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


def errors_besides_shutdown(logs: Any, kind: str) -> list[str]:
    """The server logs' errors, less hypercorn's own noise when it stops with a WebSocket open.

    Hypercorn cancels open connections after its graceful timeout, and asyncio logs
    the cancelled reader callback as an ERROR; nothing of livepanel is involved.
    """
    errors = logs.errors()
    if kind == "hypercorn":
        errors = [e for e in errors if not e.startswith("asyncio: Exception in callback Stream")]
    return list(errors)


class Collector:
    """Iterates a client in a task; keeps events and ``ResumeUnavailable`` gaps in order."""

    def __init__(self, client: Client) -> None:
        self.items: list[Event | ResumeUnavailable] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(client))

    @property
    def events(self) -> list[Event]:
        return [item for item in self.items if isinstance(item, Event)]

    @property
    def gaps(self) -> list[ResumeUnavailable]:
        return [item for item in self.items if isinstance(item, ResumeUnavailable)]

    async def _run(self, client: Client) -> None:
        try:
            for _ in range(100):  # one pass per ResumeUnavailable: bounded
                try:
                    async for event in client:
                        self.items.append(event)
                        self._changed.set()
                    return
                except ResumeUnavailable as exc:
                    self.items.append(exc)
                    self._changed.set()
        finally:
            self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Return once ``predicate()`` holds; fail if iteration ends or time runs out first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._changed.clear()
            if predicate():
                return
            if self.task.done():
                self.task.result()
                raise AssertionError(f"iteration ended early; got {self.items}")
            await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - loop.time()))

    async def wait_events(self, count: int, timeout: float = 10.0) -> list[Event]:
        await self.wait_until(lambda: len(self.events) >= count, timeout)
        return self.events


# --------------------------------------------------------------------------- scripted server


def frame(kind: str, payload: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"type": kind, "timestamp": "2026-02-21T10:00:00.123Z"}
    data["payload"] = payload
    if event_id is not None:
        data["id"] = event_id
    return data


def welcome(last_event_id: str = "e0:0", heartbeat: float = 25.0) -> dict[str, Any]:
    return frame(
        "welcome",
        {
            "connectionId": "c1",
            "heartbeatInterval": heartbeat,
            "lastEventId": last_event_id,
            "server": "livepanel/test",
        },
    )


def event(event_id: str) -> dict[str, Any]:
    return frame("session.killed", {"sessionKey": event_id, "agentId": "a1"}, event_id)


class Peer:
    """One connection to the scripted server, spoken with a wsproto server connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ws = WSConnection(ConnectionType.SERVER)
        self.request: Request | None = None
        self.pending: list[WSEvent] = []

    @property
    def query(self) -> dict[str, str]:
        assert self.request is not None
        return dict(parse_qsl(urlsplit(self.request.target).query))

    def header(self, name: str) -> str | None:
        assert self.request is not None
        for key, value in self.request.extra_headers:
            if key.decode().lower() == name.lower():
                return value.decode()
        return None

    async def _pump(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            raise ConnectionError("the client went away")
        self.ws.receive_data(data)
        self.pending.extend(self.ws.events())

    async def _write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_request(self) -> Request:
        for _ in range(100):
            for item in self.pending:
                if isinstance(item, Request):
                    self.request = item
                    self.pending.remove(item)
                    return item
            await self._pump()
        raise AssertionError("no handshake request")

    async def accept(self) -> None:
        await self.read_request()
        await self._write(self.ws.send(AcceptConnection()))

    async def reject(self, status: int, body: bytes = b"") -> None:
        await self.read_request()
        headers = [(b"content-length", str(len(body)).encode())]
        data = self.ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
        data += self.ws.send(RejectData(data=body, body_finished=True))
        await self._write(data)

    async def send(self, *frames: dict[str, Any]) -> None:
        """One text message holding ``frames``, newline-separated as with ``?batch=1``."""
        text = "\n".join(json.dumps(f, separators=(",", ":")) for f in frames)
        await self._write(self.ws.send(TextMessage(data=text)))

    async def ping(self, payload: bytes) -> None:
        await self._write(self.ws.send(Ping(payload=payload)))

    async def close(self, code: int) -> None:
        await self._write(self.ws.send(CloseConnection(code=code)))
        with contextlib.suppress(ConnectionError):
            await self.next(CloseConnection)

    async def next(
        self, kind: type[WSEvent] | tuple[type[WSEvent], ...], timeout: float = 5.0
    ) -> Any:
        """The client's next wsproto event of ``kind`` (others are kept in ``pending``)."""

        async def find() -> WSEvent:
            for _ in range(1000):
                for item in self.pending:
                    if isinstance(item, kind):
                        self.pending.remove(item)
                        return item
                await self._pump()
            raise AssertionError(f"no {kind} from the client")

        return await asyncio.wait_for(find(), timeout)

    async def messages(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every client text frame, decoded, until the client closes."""
        out: list[dict[str, Any]] = []
        for _ in range(1000):
            message = await self.next((TextMessage, CloseConnection), timeout)
            if isinstance(message, CloseConnection):
                if self.ws.state.name == "REMOTE_CLOSING":
                    await self._write(self.ws.send(message.response()))
                return out
            out.append(json.loads(message.data))
        return out

    async def hold(self, timeout: float = 10.0) -> None:
        """Keep the connection open, saying nothing, until the client drops it."""
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            await asyncio.wait_for(self._drain_forever(), timeout)

    async def _drain_forever(self) -> None:
        for _ in range(10_000):
            await self._pump()


Script = Callable[[Peer], Awaitable[None]]


class ScriptedServer:
    """A TCP server on 127.0.0.1 running ``scripts[n]`` for the n-th connection.

    Connections beyond the scripts are closed at once. A failing script fails the test.
    """

    def __init__(self, *scripts: Script) -> None:
        self.scripts = scripts
        self.peers: list[Peer] = []
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def finished(self, timeout: float = 5.0) -> None:
        """Wait until every script that started has returned."""
        if self._tasks:
            await asyncio.wait_for(asyncio.wait(list(self._tasks)), timeout)

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.errors:  # a failed server-side assertion explains more than the client's error
            raise self.errors[0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(reader, writer)
        index = len(self.peers)
        self.peers.append(peer)
        try:
            if index < len(self.scripts):
                await self.scripts[index](peer)
        except ConnectionError:
            pass
        except Exception as exc:
            self.errors.append(exc)
        finally:
            writer.transport.abort()
            self._tasks.discard(task)
