"""The asyncio client: :class:`Client` (``connect``), its reconnect loop and its socket reads.

The protocol work is done without I/O elsewhere: bytes by
:class:`~livepanel.client.wire.ClientWire`, frames and decisions by
:class:`~livepanel.client.stream.ClientStream`, the URL and refusals by
:class:`~livepanel.client.endpoint.Endpoint`. This module reads the socket,
watches the heartbeat, and reopens a lost connection with ``since``.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType

from livepanel.client.acks import AckSender
from livepanel.client.connector import Connector
from livepanel.client.endpoint import Endpoint
from livepanel.client.errors import ResumeUnavailable
from livepanel.client.link import Link
from livepanel.client.stream import ClientStream, Phase, Status
from livepanel.events import Event
from livepanel.protocol import CLOSE_NORMAL, parse_id
from livepanel.state import ClientState
from livepanel.type_filter import type_globs

__all__ = ["CLOSE_TIMEOUT", "Client", "connect"]

CLOSE_TIMEOUT = 2.0
"""Seconds ``close()`` waits for the server to answer the closing handshake."""


class Client:
    """A connection to a livepanel endpoint: an async context manager and async iterator.

    ``connect(url, ...)`` is ``Client(url, ...)``: the client is not connected
    until ``async with`` (or the first ``async for``). ``async with`` opens the
    connection at once, so a wrong URL, a refused login or a silent server
    fails there, without retries. Iterating yields
    :class:`~livepanel.events.Event` objects (never ``welcome``, ``ping``,
    ``pong`` or ``error`` frames) until the server closes the connection
    cleanly (code 1000) or :meth:`close` is called. Once open, a lost
    connection (a close code other than 1000, a reset, or no frame for two
    heartbeat intervals) is reopened with exponential backoff and full
    jitter, resuming with ``since`` = the last event id seen
    (``welcome.lastEventId`` before the first event), so nothing is missed
    and nothing is repeated; when the server cannot resume, the iterator
    raises :class:`ResumeUnavailable` at the gap and goes on live when
    iterated again. A server's retry hint (a 429 with ``Retry-After``, a close
    1012/1013 with the reason ``retry_after=<s>``) is waited out with jitter
    and is not a failed attempt. See ``docs/client.md``.

    Args:
        url: ``ws://host:port/path`` or ``wss://...``; ``user:password@`` in it
            is used when ``username`` is not given.
        username: Basic Auth user name (``None``: no ``Authorization`` header).
        password: Basic Auth password.
        headers: extra handshake headers (a mapping or ``(name, value)`` pairs).
        origin: the ``Origin`` header to send (browsers always send one; by
            default this client sends none, as a non-browser client).
        types: type globs to receive (``["session.*"]``); ``None``: everything.
        since: an event id: replay every retained event after it first.
        ssl: the TLS context for ``wss://`` (default: the system's CAs, via
            ``ssl.create_default_context()``).
        reconnect: reopen a lost connection (``False``: raise instead).
        max_retries: reconnection attempts in a row before giving up.
        open_timeout: seconds for one attempt to connect, handshake and get ``welcome``.
        backoff_initial: the first retry waits up to this many seconds.
        backoff_max: no retry waits longer than this.
        batch: let the server pack queued frames into one (``?batch=1``).
        state: ask for the state on connect (``?state=1``) and keep it in
            :attr:`state` (a :class:`~livepanel.state.ClientState`): loaded from
            each ``state`` frame, updated by every event before it is yielded.
            The iterator also yields each ``state`` frame, as an :class:`Event`
            of type ``"state"`` without an id. A reconnect that cannot resume
            gets a new state instead of :class:`ResumeUnavailable`.
        on_status: called with the new :attr:`status` at each change (from the task
            iterating; keep it quick).

    Raises:
        ValueError: a URL that is not ``ws://`` or ``wss://``, a malformed
            ``since``, or ``ssl`` with ``ws://``.

    The client itself raises :class:`AuthenticationError` (401) and
    :class:`PermissionDenied` (403) at once, never retrying;
    :class:`OpenTimeout` when a server does not answer within
    ``open_timeout``; :class:`ConnectionFailed` when it cannot connect or
    gives up; and :class:`ResumeUnavailable` from the iterator where events
    were missed.

    Attributes:
        url: the endpoint's URL without credentials (safe to log).
        reconnect: as given; so are ``max_retries``, ``open_timeout``,
            ``backoff_initial``, ``backoff_max`` and ``batch``.

    Example::

        async with connect("ws://localhost:8000/ws", username="admin", password=pw) as client:
            async for event in client:
                print(client.last_event_id, event.type, event.payload)
                await client.ack(event.id)
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        origin: str | None = None,
        types: Iterable[str] | None = None,
        since: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        reconnect: bool = True,
        max_retries: int = 10,
        open_timeout: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        batch: bool = True,
        state: bool = False,
        on_status: Callable[[Status], None] | None = None,
    ) -> None:
        endpoint = Endpoint.parse(
            url, username=username, password=password, headers=headers, origin=origin, ssl=ssl
        )
        self.url = endpoint.url
        globs = type_globs(types) if types is not None else None
        self._stream = ClientStream(
            self.url, types=globs, since=since, batch=batch, state=state, on_status=on_status
        )
        self._connector = Connector(
            endpoint,
            self._stream,
            reconnect=reconnect,
            max_retries=max_retries,
            open_timeout=open_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        if since is not None:
            parse_id(since)
        self._busy = False
        self._wakeup = asyncio.Event()
        self._acks = AckSender(self._stream, self._connector)

    # ------------------------------------------------------------------ public state

    @property
    def status(self) -> Status:
        """``"connecting"``, ``"open"``, ``"catching_up"``, ``"reconnecting"``,
        ``"auth_failed"`` or ``"closed"`` (``on_status`` is told each change)."""
        return self._stream.status

    @property
    def staleness(self) -> float | None:
        """Seconds since the newest frame proving the stream live (welcome, an event, a
        heartbeat); ``None`` before the first."""
        since = self._stream.last_frame_at
        return None if since is None else max(0.0, time.monotonic() - since)

    @property
    def state(self) -> ClientState | None:
        """With ``state=True``: the collections (:class:`~livepanel.state.ClientState`)."""
        return self._stream.state

    @property
    def batch(self) -> bool:
        """Whether the server may pack queued frames into one (``?batch=1``)."""
        return self._stream.batch

    @property
    def last_event_id(self) -> str | None:
        """The id of the newest event received, ``None`` before the first one."""
        return self._stream.last_event_id

    @property
    def connection_id(self) -> str | None:
        """The server's id for the current connection (from ``welcome``)."""
        return self._stream.connection_id

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between server frames on a quiet stream (from ``welcome``)."""
        return self._stream.heartbeat

    @property
    def reconnects(self) -> int:
        """How many times a lost connection has been reopened."""
        return self._connector.reconnects

    @property
    def reconnect(self) -> bool:
        """Whether a lost connection is reopened, as given."""
        return self._connector.reconnect

    @property
    def max_retries(self) -> int:
        """Reconnection attempts in a row before giving up, as given."""
        return self._connector.max_retries

    @property
    def open_timeout(self) -> float:
        """Seconds one attempt may take to connect, handshake and get ``welcome``."""
        return self._connector.open_timeout

    @property
    def backoff_initial(self) -> float:
        """The first retry waits up to this many seconds, as given."""
        return self._connector.backoff_initial

    @property
    def backoff_max(self) -> float:
        """No retry waits longer than this many seconds, as given."""
        return self._connector.backoff_max

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Client:
        if self._stream.phase is Phase.CONNECTING and self._connector.link is None:
            await self._connector.open_first()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Event:
        if self._busy:
            raise RuntimeError("another task is already iterating this livepanel client")
        self._busy = True
        try:
            return await self._next()
        finally:
            self._busy = False

    async def close(self) -> None:
        """Close the connection (closing handshake, code 1000); iteration then ends.

        Safe to call more than once and from another task than the one iterating.
        """
        connector = self._connector
        self._acks.cancel()
        if not self._stream.closing():
            if self._busy or connector.link is not None:
                await connector.wait_disconnected(CLOSE_TIMEOUT)
            return
        self._wakeup.set()
        link = connector.link
        if link is not None and link.is_open:
            await self._acks.flush(force=True)
            link.wire.close(CLOSE_NORMAL)
            try:
                await link.flush()
            except OSError:
                connector.drop(abort=True)
            if self._busy:
                await connector.wait_disconnected(CLOSE_TIMEOUT)
            else:
                await link.drain_close(CLOSE_TIMEOUT)
        connector.drop(abort=False)
        self._stream.closed()
        if link is not None:
            await link.wait_closed(CLOSE_TIMEOUT)

    # ------------------------------------------------------------------ client messages

    async def ack(self, event_id: str | None = None) -> None:
        """Tell the server the last event this client has processed.

        Acks are coalesced to at most one every ``ACK_INTERVAL`` seconds (the
        newest wins; a pending one is sent with the next read, on the next
        connection if this one is down, or on close), so acking every event
        never trips the server's rate limit.

        Args:
            event_id: an event's id; ``None`` acks :attr:`last_event_id`.

        Raises:
            ValueError: ``event_id`` is not a livepanel event id.

        Example::

            async for event in client:
                await handle(event)
                await client.ack(event.id)
        """
        if event_id is None:
            event_id = self._stream.last_event_id
            if event_id is None:
                return
        self._stream.ack(event_id)
        await self._acks.send()

    async def subscribe(self, types: Iterable[str] = ("*",), since: str | None = None) -> None:
        """Replace the type filter; with ``since``, replay what came after that id first.

        The new filter also applies to every reconnect. While disconnected it is
        simply remembered.

        Args:
            types: type globs such as ``["session.*", "agent.status"]``.
            since: an event id to replay from (``None``: live events only).

        Raises:
            ValueError: ``since`` is not a livepanel event id, or ``types`` is
                not a list of strings.

        Example::

            await client.subscribe(["cron.*"], since=client.last_event_id)
        """
        link = self._connector.link
        connected = link is not None and link.is_open
        message = self._stream.subscribe(type_globs(types), since, connected=connected)
        if link is not None and message is not None:
            await link.send(message)

    # ------------------------------------------------------------------ reading

    async def _next(self) -> Event:
        while True:
            item = self._stream.take()
            if isinstance(item, ResumeUnavailable):
                raise item
            if item is not None:
                return item
            if self._stream.phase.done:
                self._connector.settle()  # close() may have run while this task was connecting
                raise StopAsyncIteration
            link = self._connector.link
            if link is None:
                if self._stream.phase is Phase.CONNECTING:
                    await self._connector.open_first()
                else:
                    await self._connector.reopen(self._wakeup)
                continue
            await self._read(link)

    async def _read(self, link: Link) -> None:
        """Read once from the socket and act on what it carried."""
        await self._acks.flush()
        loop = asyncio.get_running_loop()
        # liveness: the server sends something at least every heartbeat interval
        timer = loop.call_later(2 * self._stream.heartbeat, self._on_silence)
        try:
            data = await link.read()
        except OSError as exc:
            data = b""
            self._stream.lose(f"{type(exc).__name__}: {exc}")
        finally:
            timer.cancel()
        if self._stream.phase.done and self._connector.link is None:  # close() dropped it
            return
        for output in link.receive(data):
            self._stream.receive(output, time.monotonic())
        try:
            if self._connector.link is link:
                await link.flush()
        except OSError as exc:
            self._stream.lose(f"{type(exc).__name__}: {exc}")
        self._connector.settle()

    def _on_silence(self) -> None:
        self._stream.silent()
        link = self._connector.link
        if link is not None:
            link.abort()  # wakes the pending read with end of stream


connect = Client
"""Connect to a livepanel endpoint: ``connect(url, username=..., password=..., ...)`` is
:class:`Client` ``(url, ...)``, which documents the arguments; use it as ``async with``
and ``async for``.

Example::

    async with connect("wss://panel.example.com/ws", username="admin", password=pw) as client:
        async for event in client:
            print(event.type, event.payload)
"""
