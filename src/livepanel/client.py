"""The Python client: a reconnecting, resuming async iterator of events, built on wsproto.

:func:`connect` opens a WebSocket to a livepanel endpoint and yields every
:class:`~livepanel.events.Event` the server sends, in order. The protocol work
is done by :class:`ClientWire`, a sans-I/O state machine around ``wsproto``
(bytes in, frames out, pings answered); :class:`Client` is the asyncio glue
that reads the socket, watches the heartbeat and reconnects with ``since``
when the connection drops. The rules are in ``docs/client.md``.

Example::

    async with connect("wss://panel.example.com/ws", username="admin", password=pw) as client:
        async for event in client:
            print(event.type, event.payload)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import enum
import json
import logging
import random
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, Union
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from livepanel.errors import LivePanelError
from livepanel.events import Event
from livepanel.protocol import CLOSE_NORMAL, parse_id, type_globs
from livepanel.state import ClientState

__all__ = [
    "MAX_REDIRECTS",
    "STABLE_AFTER",
    "AuthenticationError",
    "Client",
    "ConnectionFailed",
    "HandshakeRejected",
    "OpenTimeout",
    "PermissionDenied",
    "ResumeUnavailable",
    "Status",
    "connect",
]

logger = logging.getLogger("livepanel")

MAX_REDIRECTS = 3
"""Handshake redirects a client follows at most, within one origin."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Redirected(Exception):
    """The handshake was redirected within the origin: try again at ``path``."""

    def __init__(self, path: str, query: list[tuple[str, str]]) -> None:
        super().__init__(path)
        self.path = path
        self.query = query


Status = Literal["connecting", "open", "reconnecting", "auth_failed", "closed"]
"""A client's state, :attr:`Client.status`: the same states as ``livepanel.js``'s."""

DEFAULT_HEARTBEAT = 25.0
"""Seconds assumed between server frames until ``welcome`` says otherwise."""
STABLE_AFTER = 5.0
"""Seconds a connection must stay open before its loss starts a fresh count of retries."""
ACK_INTERVAL = 0.2
"""Acks are coalesced to at most one per this many seconds (the server rate-limits)."""
CLOSE_TIMEOUT = 2.0
"""Seconds ``close()`` waits for the server to answer the closing handshake."""
_READ_SIZE = 65536
_MAX_REJECTION_BODY = 65536
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CLOSE_ABNORMAL = int(CloseReason.ABNORMAL_CLOSURE)  # 1006: never sent, a vanished peer


class _State(enum.Enum):
    """Where a :class:`Client` is; :attr:`status` is what users see (livepanel.js's names)."""

    CONNECTING = "connecting"  # the first connection is opening, until its welcome
    OPEN = "open"  # welcomed: events flow
    RECONNECTING = "reconnecting"  # lost: backing off, or reopening until the next welcome
    ENDED = "ended"  # the server closed the stream cleanly (1000): iteration ends
    CLOSING = "closing"  # close() was called: the closing handshake runs
    CLOSED = "closed"  # gave up, refused for good, or closed: nothing more happens
    AUTH_FAILED = "auth_failed"  # credentials refused (401/403): final, never retried

    @property
    def status(self) -> Status:
        return _STATUS[self]

    @property
    def opening(self) -> bool:
        """A connection is being opened and has not been welcomed yet."""
        return self in (_State.CONNECTING, _State.RECONNECTING)

    @property
    def done(self) -> bool:
        """Iteration is over: the stream ended, or close() was called, or the client gave up."""
        return self in (_State.ENDED, _State.CLOSING, _State.CLOSED, _State.AUTH_FAILED)


_STATUS: dict[_State, Status] = {
    _State.CONNECTING: "connecting",
    _State.OPEN: "open",
    _State.RECONNECTING: "reconnecting",
    _State.ENDED: "closed",
    _State.CLOSING: "closed",
    _State.CLOSED: "closed",
    _State.AUTH_FAILED: "auth_failed",
}


# --------------------------------------------------------------------------- errors


class HandshakeRejected(LivePanelError):
    """The server answered the WebSocket handshake with an HTTP error status.

    Attributes:
        status: the HTTP status code (``429``, ``404``...).
        code: livepanel's error code from the JSON body (``"unauthorized"``), if any.

    Example::

        try:
            async with connect(url, username=user, password=pw) as client:
                ...
        except AuthenticationError:
            print("wrong username or password")
        except HandshakeRejected as exc:
            print("refused:", exc.status, exc.code)
    """

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AuthenticationError(HandshakeRejected):
    """The server refused the credentials (HTTP 401); reconnecting would not help.

    Example::

        try:
            async with connect(url, username="admin", password=password) as client:
                ...
        except AuthenticationError:
            sys.exit("wrong username or password")
    """


class PermissionDenied(HandshakeRejected):
    """The server refused this user, origin or plain-text connection (HTTP 403).

    ``code`` says which: ``"forbidden"``, ``"origin_not_allowed"`` or ``"tls_required"``.

    Example::

        except PermissionDenied as exc:
            sys.exit(f"not allowed ({exc.code}): {exc}")
    """


class ConnectionFailed(LivePanelError, ConnectionError):
    """The connection could not be opened, or it was lost and every retry failed.

    Example::

        try:
            async with connect(url, max_retries=3) as client:
                async for event in client:
                    ...
        except ConnectionFailed as exc:
            print("gave up:", exc)
    """


class OpenTimeout(ConnectionFailed, TimeoutError):
    """The server did not complete the handshake and ``welcome`` within ``open_timeout``.

    Example::

        except OpenTimeout:
            print("the server did not answer within 10 s")
    """


class ResumeUnavailable(LivePanelError):
    """Events after ``since`` are no longer retained: some were missed; refetch your state.

    Raised by the iterator exactly where the gap is: every event before it has
    been yielded, and iterating again goes on with the live stream.

    Attributes:
        since: the id the client asked to resume after.
        last_event_id: where the client resumes from now (the newest id it knows).

    Example::

        while True:
            try:
                async for event in client:
                    apply(state, event)
                break
            except ResumeUnavailable:
                state = await fetch_state()
    """

    def __init__(self, since: str | None, last_event_id: str | None, message: str = "") -> None:
        super().__init__(
            f"cannot resume after {since!r}: {message or 'those events are no longer retained'}"
        )
        self.since = since
        self.last_event_id = last_event_id


# --------------------------------------------------------------------------- sans-I/O


@dataclasses.dataclass(frozen=True)
class Accepted:
    """The server accepted the WebSocket handshake."""


@dataclasses.dataclass(frozen=True)
class Rejected:
    """The server answered the handshake with an HTTP response instead (its whole body)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


@dataclasses.dataclass(frozen=True)
class Frame:
    """One JSON object sent by the server (a batched text frame gives several)."""

    data: dict[str, Any]

    @property
    def type(self) -> str:
        kind = self.data.get("type")
        return kind if isinstance(kind, str) else ""


@dataclasses.dataclass(frozen=True)
class InvalidFrame:
    """A server message that is not a JSON object (skipped and logged by :class:`Client`)."""

    text: str
    error: str


@dataclasses.dataclass(frozen=True)
class Closed:
    """The connection ended: the server's close code, or 1006 when it just vanished."""

    code: int
    reason: str = ""


WireEvent = Union[Accepted, Rejected, Frame, InvalidFrame, Closed]  # noqa: UP007 - runtime alias


class ClientWire:
    """The client side of one livepanel connection, without I/O: bytes in, frames out.

    It writes the handshake request, answers protocol pings and closing
    handshakes, joins fragmented messages and splits ``?batch=1`` frames into
    one :class:`Frame` per JSON object. Whatever must go to the server waits in
    :meth:`data_to_send`.

    Args:
        host: the ``Host`` header value (``"example.com:8080"``).
        target: the request path and query string.
        headers: extra request headers, as ``(name, value)`` strings.

    Raises:
        ConnectionError: from :meth:`receive_data`, when the handshake response
            is not valid HTTP or not a valid WebSocket upgrade.

    Example::

        >>> wire = ClientWire("localhost:8000", "/ws?batch=1")
        >>> wire.data_to_send().startswith(b"GET /ws?batch=1 HTTP/1.1")
        True
    """

    def __init__(self, host: str, target: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._ws = WSConnection(ConnectionType.CLIENT)
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        self._out = bytearray(self._ws.send(Request(host=host, target=target, extra_headers=extra)))
        self._text: list[str] = []
        self._rejection: RejectConnection | None = None
        self._rejection_body = bytearray()
        self._done = False

    @property
    def is_open(self) -> bool:
        """Whether client frames can be sent (the handshake is done, no close started)."""
        return self._ws.state is ConnectionState.OPEN

    def data_to_send(self) -> bytes:
        """Bytes to write to the socket now (and forget)."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def send_text(self, text: str) -> None:
        """Queue a text frame; ignored unless the connection is open."""
        if self.is_open:
            self._out += self._ws.send(TextMessage(data=text))

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake (only while open)."""
        if self.is_open:
            self._out += self._ws.send(CloseConnection(code=code, reason=reason))

    def receive_data(self, data: bytes | None) -> list[WireEvent]:
        """Feed bytes read from the socket (``None`` at end of stream); return what they mean."""
        if self._done or data == b"":  # h11 would take b"" for the end of the stream
            return []
        try:
            self._ws.receive_data(data)
            # consumed one by one: a ping must be answered before a close that follows it
            return self._process(self._ws.events(), data is None)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self._done = True
            raise ConnectionError(f"invalid handshake response from the server: {exc}") from None

    def _process(self, events: Iterable[object], end_of_stream: bool) -> list[WireEvent]:
        out: list[WireEvent] = []
        for event in events:
            if isinstance(event, AcceptConnection):
                out.append(Accepted())
            elif isinstance(event, RejectConnection):
                self._rejection = event
                if not event.has_body:
                    out.append(self._rejected())
            elif isinstance(event, RejectData):
                room = _MAX_REJECTION_BODY - len(self._rejection_body)
                self._rejection_body += event.data[: max(0, room)]
                if event.body_finished:
                    out.append(self._rejected())
            elif isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    out.extend(_split_frames(text))
            elif isinstance(event, BytesMessage):
                if event.message_finished:
                    out.append(InvalidFrame("", "a binary message; livepanel sends JSON text"))
            elif isinstance(event, Ping):
                if self.is_open:
                    self._out += self._ws.send(event.response())
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self._out += self._ws.send(event.response())
                self._done = True
                out.append(Closed(event.code, event.reason or ""))
        if end_of_stream and not self._done:
            self._done = True
            if self._rejection is not None:
                out.append(self._rejected())
            else:
                vanished = "the connection was closed without a closing handshake"
                out.append(Closed(_CLOSE_ABNORMAL, vanished))
        return out

    def _rejected(self) -> Rejected:
        assert self._rejection is not None
        self._done = True
        return Rejected(
            self._rejection.status_code,
            tuple(self._rejection.headers),
            bytes(self._rejection_body),
        )


def _split_frames(text: str) -> list[WireEvent]:
    """One message may hold several newline-separated JSON frames (``?batch=1``)."""
    out: list[WireEvent] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            out.append(InvalidFrame(line, f"invalid JSON: {exc}"))
            continue
        if isinstance(data, dict):
            out.append(Frame(data))
        else:
            out.append(InvalidFrame(line, "a frame must be a JSON object"))
    return out


# --------------------------------------------------------------------------- asyncio glue


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
    iterated again. See ``docs/client.md``.

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
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"expected a ws:// or wss:// URL, got {_redact(url)!r}")
        if scheme == "ws" and ssl is not None:
            raise ValueError("ssl= is only for wss:// URLs")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if open_timeout <= 0:
            raise ValueError("open_timeout must be > 0 seconds")
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("backoff_initial must be > 0 and backoff_max >= backoff_initial")
        if since is not None:
            parse_id(since)
        self._host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"invalid port in {_redact(url)!r}") from None
        self._port = port or (443 if scheme == "wss" else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        default = port is None or port == (443 if scheme == "wss" else 80)
        self._host_header = host if default else f"{host}:{port}"
        self._path = parts.path or "/"
        self._query = parse_qsl(parts.query, keep_blank_values=True)
        self.url = _redact(url)
        self._ssl: ssl_module.SSLContext | None = None
        if scheme == "wss":
            self._ssl = ssl if ssl is not None else ssl_module.create_default_context()
        self._headers = _request_headers(
            headers,
            username if username is not None else _unquoted(parts.username),
            password if password is not None else _unquoted(parts.password),
            origin,
        )
        self._types = type_globs(types) if types is not None else None
        self.reconnect = reconnect
        self.max_retries = max_retries
        self.open_timeout = float(open_timeout)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.batch = batch
        # state on connect (SPEC 7): ?state=1, the state frame loads it, live events update it
        self.state: ClientState | None = ClientState() if state else None
        """With ``state=True``: the collections (:class:`~livepanel.state.ClientState`)."""

        self._state = _State.CONNECTING
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._wire: ClientWire | None = None
        self._ready: deque[Event | ResumeUnavailable] = deque()
        self._lost_reason: str | None = None
        self._welcomed_at: float | None = None  # time.monotonic() of this connection's welcome
        self._attempt = 0
        self._heartbeat = DEFAULT_HEARTBEAT
        self._connection_id: str | None = None
        self._last_event_id: str | None = None
        self._resume_from: str | None = since
        self._asked_since: str | None = None
        self._conn_last_id: str | None = None
        self._ack_pending: str | None = None
        self._ack_sent_at = float("-inf")
        self._reconnects = 0
        self._busy = False
        self._write_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._disconnected = asyncio.Event()

    # ------------------------------------------------------------------ public state

    @property
    def status(self) -> Status:
        """``"connecting"``, ``"open"``, ``"reconnecting"``, ``"auth_failed"`` or ``"closed"``."""
        return self._state.status

    @property
    def last_event_id(self) -> str | None:
        """The id of the newest event received, ``None`` before the first one."""
        return self._last_event_id

    @property
    def connection_id(self) -> str | None:
        """The server's id for the current connection (from ``welcome``)."""
        return self._connection_id

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between server frames on a quiet stream (from ``welcome``)."""
        return self._heartbeat

    @property
    def reconnects(self) -> int:
        """How many times a lost connection has been reopened."""
        return self._reconnects

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Client:
        if self._state is _State.CONNECTING and self._wire is None:
            await self._open_first()
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
        if self._state in (_State.CLOSING, _State.CLOSED, _State.AUTH_FAILED):
            if self._busy or self._writer is not None:
                await self._wait_disconnected()
            return
        self._state = _State.CLOSING
        self._wakeup.set()
        wire, writer = self._wire, self._writer
        if wire is not None and wire.is_open:
            await self._flush_ack(force=True)
            wire.close(CLOSE_NORMAL)
            try:
                await self._send_pending()
            except OSError:
                self._drop(abort=True)
            if self._busy:
                await self._wait_disconnected()
            else:
                await self._drain_close()
        self._drop(abort=False)
        self._state = _State.CLOSED
        if writer is not None:
            try:
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
            except (asyncio.TimeoutError, OSError):
                writer.transport.abort()

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
            event_id = self._last_event_id
            if event_id is None:
                return
        parse_id(event_id)
        self._ack_pending = event_id
        await self._flush_ack()

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
        globs = type_globs(types)
        if since is not None:
            parse_id(since)
            self._resume_from = since
        self._types = globs
        wire = self._wire
        if wire is not None and wire.is_open:
            payload: dict[str, Any] = {"types": list(globs)}
            if since is not None:
                payload["since"] = since
                self._asked_since = since
            await self._send_frame({"type": "subscribe", "payload": payload})

    # ------------------------------------------------------------------ iteration

    async def _next(self) -> Event:
        while True:
            if self._ready:
                item = self._ready.popleft()
                if isinstance(item, ResumeUnavailable):
                    raise item
                return item
            if self._state.done:
                self._settle()  # close() may have run while this task was connecting
                raise StopAsyncIteration
            if self._wire is None:
                if self._state is _State.CONNECTING:
                    await self._open_first()
                else:
                    await self._reconnect()
                continue
            await self._read()

    async def _read(self) -> None:
        """Read once from the socket and act on what it carried."""
        reader, wire = self._reader, self._wire
        assert reader is not None
        assert wire is not None
        await self._flush_ack()
        loop = asyncio.get_running_loop()
        # liveness: the server sends something at least every heartbeat interval
        timer = loop.call_later(2 * self._heartbeat, self._on_silence)
        try:
            data = await reader.read(_READ_SIZE)
        except OSError as exc:
            data = b""
            self._lost_reason = self._lost_reason or f"{type(exc).__name__}: {exc}"
        finally:
            timer.cancel()
        if self._state.done and self._wire is None:  # close() gave up waiting and dropped it
            return
        for output in wire.receive_data(data or None):
            self._handle(output)
        try:
            await self._send_pending()
        except OSError as exc:
            self._lost_reason = self._lost_reason or f"{type(exc).__name__}: {exc}"
        self._settle()

    def _settle(self) -> None:
        """Let go of a connection that has ended, and say what comes next."""
        if self._wire is None:
            return
        if self._state.done:
            self._drop(abort=False)
            if self._state is _State.ENDED:
                logger.info("livepanel: %s closed the connection", self.url)
        elif self._lost_reason is not None:
            self._drop(abort=True)
            if self.reconnect:
                self._state = _State.RECONNECTING

    def _on_silence(self) -> None:
        self._lost_reason = f"no frame for {2 * self._heartbeat:g}s (two heartbeat intervals)"
        if self._writer is not None:
            self._writer.transport.abort()  # wakes the pending read with end of stream

    def _handle(self, output: WireEvent) -> None:
        if isinstance(output, Frame):
            self._on_frame(output.data)
        elif isinstance(output, Closed):
            if self._state.done:
                pass  # the answer to our close(), or after the end
            elif output.code == CLOSE_NORMAL and self._state is _State.OPEN:
                self._state = _State.ENDED
            elif self._lost_reason is None:
                reason = f": {output.reason}" if output.reason else ""
                self._lost_reason = f"closed with code {output.code}{reason}"
        elif isinstance(output, InvalidFrame):
            logger.warning("livepanel: skipped a server frame from %s (%s)", self.url, output.error)

    def _on_frame(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        payload = data.get("payload")
        if not isinstance(payload, dict):
            payload = {}
        if kind == "welcome" and "id" not in data:
            self._on_welcome(payload)
            return
        if kind == "state" and "id" not in data:
            if self.state is not None:  # resume after it: it holds everything up to there
                last = self.state.load(payload)
                if last is not None:
                    self._last_event_id = self._resume_from = self._conn_last_id = last
                with contextlib.suppress(ValueError):
                    self._ready.append(Event.from_dict(data))  # yielded: type "state", no id
            return
        if kind in ("ping", "pong") and "id" not in data:
            return
        if kind == "error" and "id" not in data:
            code, message = payload.get("code"), str(payload.get("message", ""))
            if code == "resume_unavailable":
                self._resume_from = self._conn_last_id or self._resume_from
                self._ready.append(ResumeUnavailable(self._asked_since, self._resume_from, message))
            else:
                logger.warning("livepanel: %s reported %s: %s", self.url, code, message)
            return
        try:
            event = Event.from_dict(data)
        except ValueError as exc:
            logger.warning("livepanel: skipped a malformed event from %s (%s)", self.url, exc)
            return
        if event.id is not None:
            self._last_event_id = self._resume_from = self._conn_last_id = event.id
        if self.state is not None and self.state.loaded:
            self.state.apply(event)
        self._ready.append(event)

    def _on_welcome(self, payload: dict[str, Any]) -> None:
        if not self._state.opening:
            return  # one welcome per connection (a later one is not the server's), none after close
        self._welcomed_at = time.monotonic()
        interval = payload.get("heartbeatInterval")
        if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval > 0:
            self._heartbeat = float(interval)
        connection_id = payload.get("connectionId")
        self._connection_id = connection_id if isinstance(connection_id, str) else None
        last = payload.get("lastEventId")
        if isinstance(last, str) and last:
            self._conn_last_id = last
            if self._resume_from is None:
                self._resume_from = last
        self._state = _State.OPEN

    # ------------------------------------------------------------------ connecting

    async def _open_first(self) -> None:
        try:
            await self._open()
        except (AuthenticationError, PermissionDenied):
            self._state = _State.AUTH_FAILED
            raise
        except BaseException:
            self._state = _State.CLOSED
            raise
        if self._state not in (_State.CLOSING, _State.CLOSED):  # close() came first
            logger.info("livepanel: connected to %s", self.url)

    async def _reconnect(self) -> None:
        reason = self._lost_reason or "connection lost"
        if not self.reconnect:
            self._state = _State.CLOSED
            raise ConnectionFailed(f"{self.url}: {reason} (reconnect=False)")
        self._state = _State.RECONNECTING
        welcomed_at, self._welcomed_at = self._welcomed_at, None
        if welcomed_at is not None and time.monotonic() - welcomed_at >= STABLE_AFTER:
            # only a connection that stayed up earns a fresh count: one that is welcomed and
            # dropped at once (a flapping or hostile server) uses the retries up
            self._attempt = 0
        while True:
            if self._attempt >= self.max_retries:
                self._state = _State.CLOSED
                raise ConnectionFailed(
                    f"{self.url}: gave up after {self.max_retries} reconnection attempts; "
                    f"last error: {reason}"
                )
            # full jitter: a random delay up to the capped exponential step
            step = min(self.backoff_max, self.backoff_initial * 2**self._attempt)
            delay = random.uniform(0, step)
            self._attempt += 1
            logger.info(
                "livepanel: %s: %s; reconnecting in %.1fs (attempt %d of %d)",
                self.url,
                reason,
                delay,
                self._attempt,
                self.max_retries,
            )
            if await self._sleep(delay):
                return  # close() was called
            try:
                await self._open()
            except (AuthenticationError, PermissionDenied) as exc:
                self._state = _State.AUTH_FAILED
                logger.warning("livepanel: %s refused the reconnection: %s", self.url, exc)
                raise
            except HandshakeRejected as exc:
                if exc.status not in _RETRYABLE_STATUS:
                    self._state = _State.CLOSED
                    raise
                reason = f"HTTP {exc.status}"
            except ConnectionFailed as exc:
                reason = str(exc)
            else:
                if self._state in (_State.CLOSING, _State.CLOSED):
                    return  # close() was called while reopening
                self._reconnects += 1
                after = f", resuming after {self._asked_since}" if self._asked_since else ""
                logger.info("livepanel: reconnected to %s%s", self.url, after)
                return

    async def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds; return ``True`` early when close() is called."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), delay)
        except asyncio.TimeoutError:
            return False
        return True

    async def _open(self) -> None:
        """One attempt: TCP, TLS, the handshake and ``welcome``, within ``open_timeout``.

        A redirect to another path of the same origin (``Mount("/ws")`` answers
        ``/ws`` with 307 to ``/ws/``) is followed, at most ``MAX_REDIRECTS`` times.
        """
        try:
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    await asyncio.wait_for(self._handshake(), self.open_timeout)
                except _Redirected as moved:
                    self._drop(abort=True)
                    logger.info("livepanel: %s redirects to %s; following", self.url, moved.path)
                    self._path, self._query = moved.path, moved.query
                    continue
                break
            else:
                raise HandshakeRejected(
                    307, f"{self.url}: more than {MAX_REDIRECTS} redirects; not followed"
                )
            self._settle()  # welcome and a close may come in one read
        except asyncio.TimeoutError:
            self._drop(abort=True)
            raise OpenTimeout(
                f"{self.url}: the server did not open the connection within "
                f"{self.open_timeout:g}s (open_timeout)"
            ) from None
        except OSError as exc:
            self._drop(abort=True)
            raise ConnectionFailed(f"cannot connect to {self.url}: {exc}") from exc
        except BaseException:
            self._drop(abort=True)
            raise

    async def _handshake(self) -> None:
        reader, writer = await asyncio.open_connection(
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl is not None else None,
        )
        self._disconnected.clear()
        self._reader, self._writer = reader, writer
        target = self._target()
        wire = self._wire = ClientWire(self._host_header, target, self._headers)
        self._lost_reason = None
        self._conn_last_id = None
        await self._send_pending()
        while self._state.opening:  # until welcome (or close() from another task)
            data = await reader.read(_READ_SIZE)
            for output in wire.receive_data(data or None):
                if isinstance(output, Rejected):
                    if output.status in _REDIRECTS:
                        raise self._redirect(output, target)
                    raise await self._rejection(output, target)
                self._handle(output)
            await self._send_pending()
            if self._state.opening and self._lost_reason is not None:
                raise ConnectionError(
                    f"the server ended the connection before welcome ({self._lost_reason})"
                )

    def _target(self) -> str:
        params = [(k, v) for k, v in self._query if k not in ("types", "since", "batch", "state")]
        if self._types is not None:
            params.append(("types", ",".join(self._types)))
        if self._resume_from is not None:
            params.append(("since", self._resume_from))
        if self.batch:
            params.append(("batch", "1"))
        if self.state is not None:
            params.append(("state", "1"))
        self._asked_since = self._resume_from
        query = urlencode(params, safe="*,:?")
        return f"{self._path}?{query}" if query else self._path

    def _redirect(self, rejected: Rejected, target: str) -> Exception:
        """A redirect to follow (same origin: the credentials go along), or the refusal."""
        location = next(
            (v.decode("latin-1") for k, v in rejected.headers if k.lower() == b"location"), ""
        )
        scheme = "wss" if self._ssl is not None else "ws"
        here = f"{scheme}://{self._host_header}{target}"
        there = urlsplit(urljoin(here, location.strip()))
        moved_scheme = {"http": "ws", "https": "wss"}.get(there.scheme, there.scheme)
        try:
            port = there.port or (443 if moved_scheme == "wss" else 80)
        except ValueError:
            port = -1
        if (moved_scheme, there.hostname, port) != (scheme, self._host, self._port):
            shown = _redact(location)[:200]
            return HandshakeRejected(
                rejected.status,
                f"{self.url}: the server redirects to {shown!r}, another origin; not followed "
                "(connect to that URL if you trust it)",
            )
        query = [(k, v) for k, v in parse_qsl(there.query, keep_blank_values=True)]
        return _Redirected(there.path or "/", query)

    async def _rejection(self, rejected: Rejected, target: str) -> HandshakeRejected:
        status, code, message = rejected.status, None, ""
        try:
            body = json.loads(rejected.body)
        except ValueError:
            body = None
        if isinstance(body, dict):
            code = body.get("error") if isinstance(body.get("error"), str) else None
            message = str(body.get("message", ""))
        if status == 403 and code is None:
            # a server without the ASGI denial-response extension turns every denial
            # into 403; a plain GET to the endpoint answers with the real status
            probed, location = await self._probe(target)
            if probed in _REDIRECTS and location:
                moved = Rejected(probed, ((b"location", location),), b"")
                raise self._redirect(moved, target)
            status = probed or status
        if status == 401:
            return AuthenticationError(
                status,
                f"{self.url}: authentication failed (401); check the username and password",
                code,
            )
        if status == 403:
            why = f": {message}" if message else ""
            return PermissionDenied(status, f"{self.url}: permission denied (403){why}", code)
        why = f": {message}" if message else ""
        return HandshakeRejected(status, f"{self.url}: the server answered {status}{why}", code)

    async def _probe(self, target: str) -> tuple[int | None, bytes]:
        """The status (and ``Location``) of a plain HTTP GET to the endpoint: livepanel runs
        the same checks, and a router that only closes a WebSocket it cannot route (a
        Starlette ``Mount`` at ``/ws``) tells a plain GET where the endpoint is."""
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl is not None else None,
            )
            lines = [f"GET {target} HTTP/1.1", f"Host: {self._host_header}"]
            lines += [f"{k}: {v}" for k, v in self._headers]
            lines += ["Connection: close", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1"))
            status_line = await reader.readline()
            parts = status_line.split()
            status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
            location = b""
            for _ in range(100):  # the headers, bounded
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"location":
                    location = value.strip()[:2048]
            return status, location
        except (OSError, ValueError):
            return None, b""
        finally:
            if writer is not None:
                writer.transport.abort()

    # ------------------------------------------------------------------ writing

    async def _send_pending(self) -> None:
        wire, writer = self._wire, self._writer
        if wire is None or writer is None:
            return
        data = wire.data_to_send()
        if data:
            writer.write(data)
            async with self._write_lock:
                await writer.drain()

    async def _send_frame(self, message: dict[str, Any]) -> None:
        wire = self._wire
        if wire is None or not wire.is_open:
            return
        wire.send_text(json.dumps(message, separators=(",", ":")))
        try:
            await self._send_pending()
        except OSError:
            pass  # the reading side notices the loss and reconnects

    async def _flush_ack(self, force: bool = False) -> None:
        event_id = self._ack_pending
        if event_id is None or self._wire is None or not self._wire.is_open:
            return
        now = asyncio.get_running_loop().time()
        if not force and now - self._ack_sent_at < ACK_INTERVAL:
            return
        self._ack_pending = None
        self._ack_sent_at = now
        await self._send_frame({"type": "ack", "payload": {"id": event_id}})

    # ------------------------------------------------------------------ closing

    async def _drain_close(self) -> None:
        """Read until the server answers our close frame (or CLOSE_TIMEOUT passes)."""
        reader, wire = self._reader, self._wire
        if reader is None or wire is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_TIMEOUT
        while self._wire is wire:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                data = await asyncio.wait_for(reader.read(_READ_SIZE), remaining)
            except (asyncio.TimeoutError, OSError):
                return
            outputs = wire.receive_data(data or None)
            if any(isinstance(o, Closed) for o in outputs) or not data:
                return

    async def _wait_disconnected(self) -> None:
        try:
            await asyncio.wait_for(self._disconnected.wait(), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            self._drop(abort=True)

    def _drop(self, *, abort: bool) -> None:
        """Forget the current connection and close its socket."""
        writer = self._writer
        self._reader = self._writer = self._wire = None
        if writer is not None:
            if abort:
                writer.transport.abort()
            else:
                writer.close()
        self._disconnected.set()


# --------------------------------------------------------------------------- helpers


def _redact(url: str) -> str:
    """The URL without its user:password part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl()


def _unquoted(value: str | None) -> str | None:
    return unquote(value) if value is not None else None


def _request_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    username: str | None,
    password: str | None,
    origin: str | None,
) -> list[tuple[str, str]]:
    items = list(headers.items() if isinstance(headers, Mapping) else headers or ())
    for name, value in items:
        if any(c in f"{name}{value}" for c in "\r\n\0"):
            raise ValueError(f"header {name!r} contains a line break or NUL")
    if username is not None:
        if ":" in username:
            raise ValueError("a Basic Auth username cannot contain ':'")
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
        items.append(("Authorization", f"Basic {token}"))
    if origin is not None:
        items.append(("Origin", origin))
    return items


connect = Client
"""Connect to a livepanel endpoint: ``connect(url, username=..., password=..., ...)`` is
:class:`Client` ``(url, ...)``, which documents the arguments; use it as ``async with``
and ``async for``.

Example::

    async with connect("wss://panel.example.com/ws", username="admin", password=pw) as client:
        async for event in client:
            print(event.type, event.payload)
"""
