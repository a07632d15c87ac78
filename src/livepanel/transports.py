"""How an admitted client is carried: a WebSocket, or a Server-Sent Events stream.

Both transports are siblings over one :class:`~livepanel.settings.EndpointSettings`:
:class:`WebSocketTransport` and :class:`EventStreamTransport` each say how
their connection is accepted, written, read, closed and refused, and
:func:`carry` is the one life they share, from accept to close: the
broadcaster's :class:`~livepanel.connection.Connection`, the ``welcome``
frame, the first subscription, and the connection's writer and reader, two
tasks of its own.

Both tasks start from the connection's ASGI task, which waits for the writer:
they run in that task's context (what a host middleware set for this
request), and each wake of the writer passes through two coroutine frames,
not through the whole chain of the server's and the host's middleware. Client
frames go through :class:`livepanel.protocol.ClientProtocol`; a broadcast
never awaits a socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, urlencode

from asgiref.typing import ASGIReceiveCallable, WWWScope

from livepanel.broadcaster import Broadcaster
from livepanel.connection import CloseReason, Connection
from livepanel.handshake import Denial, header
from livepanel.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SERVICE_RESTART,
    CLOSE_TRY_AGAIN_LATER,
    Ack,
    ClientProtocol,
    Close,
    ConnectOptions,
    Reply,
    Subscribe,
    error_frame,
    parse_connect_query,
    welcome_frame,
)
from livepanel.refusals import Refusals, cors_headers, retry_reason
from livepanel.schema.fingerprint import current_fingerprint
from livepanel.settings import EndpointSettings
from livepanel.slots import ConnectionSlots, Slot
from livepanel.sse import SSE_HEADERS, sse_chunk, sse_retry

__all__ = [
    "CLOSE_TIMEOUT",
    "EventStreamTransport",
    "Transport",
    "WebSocketTransport",
    "carry",
    "close_reason",
]

logger = logging.getLogger("livepanel")

# how each way a connection ends is said on the wire (CLIENT_LEFT: nothing to say)
_CLOSE_CODES = {
    CloseReason.GOING_AWAY: CLOSE_GOING_AWAY,
    CloseReason.SERVICE_RESTART: CLOSE_SERVICE_RESTART,
    CloseReason.POLICY_VIOLATION: CLOSE_POLICY_VIOLATION,
    CloseReason.MESSAGE_TOO_BIG: CLOSE_MESSAGE_TOO_BIG,
    CloseReason.INTERNAL_ERROR: CLOSE_INTERNAL_ERROR,
    CloseReason.SLOW_CONSUMER: CLOSE_TRY_AGAIN_LATER,
}
_CLOSE_REASONS = {code: reason for reason, code in _CLOSE_CODES.items()}
_ONE_REPLAY = "one replay or state at a time: read the last one before asking for another"

CLOSE_TIMEOUT = 1.0
"""Seconds a transport waits to say its close (a close frame, the end of a stream) to a client
that does not read; then the connection's task ends without it."""


def close_reason(code: int, default: CloseReason = CloseReason.GOING_AWAY) -> CloseReason:
    """The :class:`~livepanel.connection.CloseReason` a close code stands for.

    Example::

        >>> close_reason(1013)
        <CloseReason.SLOW_CONSUMER: 'slow_consumer'>
    """
    return _CLOSE_REASONS.get(code, default)


class Transport(Protocol):
    """What :func:`carry` needs from a transport: its name, the connection's id, and how
    it accepts, writes, reads, closes, refuses and abandons.

    Example::

        transport: Transport = WebSocketTransport(scope, receive, send, settings, refusals)
    """

    name: str
    """``"websocket"`` or ``"sse"``: the broadcaster counts connections by it."""
    id: str
    """The connection's id, in ``welcome`` and in log lines."""
    scope: WWWScope

    def options(self) -> ConnectOptions:
        """What the connect URL (and headers) ask for."""
        ...

    async def accept(self) -> None:
        """Tell the client it is in."""
        ...

    def write(self, conn: Connection) -> Coroutine[Any, Any, CloseReason]:
        """The connection's writer: :meth:`Connection.write` with this transport's ``send``."""
        ...

    async def read(self, conn: Connection, protocol: ClientProtocol) -> None:
        """Handle what the client sends until it leaves or must be closed."""
        ...

    async def close(self, code: int, retry_after: float | None = None) -> None:
        """End the connection with ``code``; with ``retry_after``, say when to come back (a
        worker shutting down spreads its clients' returns); best effort."""
        ...

    async def refuse(self, denial: Denial) -> None:
        """Answer a refused handshake."""
        ...

    async def abandon(self, reason: str = "") -> None:
        """The server cancels this connection's task: say what can still be said."""
        ...


async def carry(
    transport: Transport,
    broadcaster: Broadcaster,
    settings: EndpointSettings,
    slots: ConnectionSlots,
    user: str,
    audiences: frozenset[str] | None,
    slot: Slot | None = None,
    authenticated_at: float | None = None,
) -> None:
    """Serve one admitted connection from accept to close.

    ``slot`` (the handshake's) is given back as soon as the connection
    closes; a revocation heard since ``authenticated_at`` (``time.monotonic()``
    when the handshake began) closes it as it opens. A writer stuck on a
    client that stopped reading is abandoned a few seconds after the close
    (:data:`~livepanel.connection.ABANDON_AFTER`) and the close is said within
    :data:`CLOSE_TIMEOUT` seconds or not at all, so the task ends whether or
    not the client reads.

    Example::

        await carry(WebSocketTransport(...), app.broadcaster, settings, slots, "alice", None)
    """
    protocol = ClientProtocol(
        max_message_size=settings.max_message_size,
        client_rate=settings.client_rate,
        client_burst=settings.client_burst,
    )
    options = transport.options()
    await transport.accept()
    async with broadcaster.connection(
        batch=options.batch,
        user=user,
        audiences=audiences,
        transport=transport.name,
        authenticated_at=authenticated_at,
    ) as conn:
        if slot is not None:
            conn.when_closed(slot.release)
        conn.push_control(
            welcome_frame(
                transport.id,
                settings.heartbeat_interval,
                conn.last_event_id,
                schema=current_fingerprint(),
            )
        )
        if options.error is not None:
            conn.push_control(error_frame("invalid_message", options.error))
        loop = asyncio.get_running_loop()
        reader = loop.create_task(_read(transport, conn, protocol, slots))
        try:
            if options.subscribe is not None:
                wanted = options.subscribe
                await conn.subscribe(wanted.types, wanted.since, wanted.state)
                protocol.charge(conn.outbox.replayed, conn.outbox.state_bytes)
            reason = await _written(conn.start_writer(transport.write(conn)), conn)
            code = conn.revoked_code if reason is CloseReason.REVOKED else _CLOSE_CODES.get(reason)
            if code is not None:
                wait = slots.farewell(conn)  # a shutdown says when to come back
                await transport.close(code, wait)
        finally:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, OSError):
                pass


async def _written(writer: asyncio.Task[CloseReason], conn: Connection) -> CloseReason:
    """Why the connection's writer ended, also when it was abandoned (cancelled).

    Awaiting the task itself (no ``asyncio.wait``: its set, future and callback cost
    about a kilobyte per connection for as long as it is open): when the server
    cancels this task, the writer is cancelled with it and the cancellation goes on up.
    """
    try:
        return await writer
    except asyncio.CancelledError:
        if writer.cancelled() and conn.abandoned and not _cancelling():
            return conn.close_reason or CloseReason.CLIENT_LEFT  # a client that stopped reading
        raise


def _cancelling() -> bool:
    """Whether this task itself is being cancelled (always ``False`` on Python 3.10, where a
    task cannot tell: a server's cancellation racing an abandon is then taken for the abandon,
    and the task ends a moment later anyway)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False


async def _read(
    transport: Transport, conn: Connection, protocol: ClientProtocol, slots: ConnectionSlots
) -> None:
    """The connection's reader: open in the app's slots while the client is there."""
    slots.opened(conn)
    try:
        await transport.read(conn, protocol)
    finally:
        slots.closed(conn)


class _Request:
    """What both transports hold: one request's ASGI callables and the endpoint's settings.

    A plain holder, nothing to override: each transport is a sibling built on it.
    """

    def __init__(
        self,
        scope: WWWScope,
        receive: ASGIReceiveCallable,
        send: Any,
        settings: EndpointSettings,
        refusals: Refusals,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.settings = settings
        self.refusals = refusals
        self.id = secrets.token_urlsafe(9)  # names the connection in logs and in welcome


class WebSocketTransport(_Request):
    """One WebSocket: accepted with ``websocket.accept``, frames as text messages.

    Args:
        scope: the connection's ASGI scope.
        receive: its ``receive``.
        send: its ``send``.
        settings: the endpoint's settings.
        refusals: the endpoint's refusals (what a denial says, and its log).

    Example::

        await carry(WebSocketTransport(scope, receive, send, settings, refusals), ...)
    """

    name = "websocket"

    def options(self) -> ConnectOptions:
        """``?types=``, ``since``, ``state`` and ``batch`` of the connect URL."""
        return parse_connect_query(self.scope.get("query_string", b""))

    async def accept(self) -> None:
        """``websocket.accept``, no subprotocol."""
        await self.send({"type": "websocket.accept", "subprotocol": None, "headers": []})

    def write(self, conn: Connection) -> Coroutine[Any, Any, CloseReason]:
        """The connection's writer, a text message per (batch of) frame(s)."""
        send = self.send

        def send_text(text: str) -> Awaitable[None]:
            return send({"type": "websocket.send", "text": text})  # type: ignore[no-any-return]

        return conn.write(send_text, self.settings.heartbeat_interval, asgi_send=send)

    async def read(self, conn: Connection, protocol: ClientProtocol) -> None:
        """Turn client frames into actions until the client disconnects."""
        while True:
            message = await self.receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                conn.close(CloseReason.CLIENT_LEFT)
                return
            if kind != "websocket.receive":
                continue
            text = message.get("text")
            if isinstance(text, str):
                actions = protocol.receive_text(text)
            else:
                actions = protocol.receive_bytes(cast(bytes, message.get("bytes") or b""))
            for action in actions:
                if isinstance(action, Subscribe) and (action.since is not None or action.state):
                    if conn.replaying:  # one replay or state in flight: refused, then 1008
                        actions.extend(protocol.refuse_busy(_ONE_REPLAY))
                        continue
                    outbox = conn.outbox
                    replayed, state_bytes = outbox.replayed, outbox.state_bytes
                    await conn.subscribe(action.types, action.since, action.state)
                    # neither is free: the cost grows with the replay's events, the state's bytes
                    protocol.charge(outbox.replayed - replayed, outbox.state_bytes - state_bytes)
                elif isinstance(action, Reply):
                    conn.push_control(action.text)
                elif isinstance(action, Close):
                    conn.close(close_reason(action.code, CloseReason.POLICY_VIOLATION))
                    return
                elif isinstance(action, Subscribe):
                    await conn.subscribe(action.types, action.since, action.state)
                elif isinstance(action, Ack) and conn.acks is not None:
                    conn.acks.record(action.id)  # what receipts count

    async def close(self, code: int, retry_after: float | None = None) -> None:
        """``websocket.close`` with ``code``, and ``retry_after=<seconds>`` as its reason."""
        reason = "" if retry_after is None else retry_reason(retry_after)
        if code == CLOSE_TRY_AGAIN_LATER:
            logger.info("livepanel: closed slow connection %s (1013)", self.id)
        try:
            await asyncio.wait_for(
                self.send({"type": "websocket.close", "code": code, "reason": reason}),
                CLOSE_TIMEOUT,
            )
        except (Exception, asyncio.TimeoutError):  # gone, refused, or not reading: said enough
            pass

    async def refuse(self, denial: Denial) -> None:
        """An HTTP response through the extension, else close 1008 before accept."""
        await self.refusals.refuse_websocket(self.scope, self.send, denial)

    async def abandon(self, reason: str = "") -> None:
        """Best effort: close with 1012 and ``reason`` a connection whose task the server is
        cancelling (hypercorn after its graceful timeout stops without a word)."""
        close = {"type": "websocket.close", "code": CLOSE_SERVICE_RESTART, "reason": reason}
        try:
            await asyncio.wait_for(self.send(close), 1.0)
        except (Exception, asyncio.TimeoutError):  # closed already, or the client is gone
            pass


class EventStreamTransport(_Request):
    """One Server-Sent Events stream: a streaming ``200``, frames as SSE messages.

    Args:
        scope: the request's ASGI scope (a ``GET`` with ``Accept: text/event-stream``).
        receive: its ``receive``.
        send: its ``send``.
        settings: the endpoint's settings.
        refusals: the endpoint's refusals (what a denial says, and its log).

    Example::

        await carry(EventStreamTransport(scope, receive, send, settings, refusals), ...)
    """

    name = "sse"

    def options(self) -> ConnectOptions:
        """The connect URL's options, ``Last-Event-ID`` as ``since``; never batched."""
        options = parse_connect_query(self.scope.get("query_string", b""))
        resume = header(self.scope, b"last-event-id")  # the browser's reconnect, if any
        if resume:
            merged = dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))
            merged["since"] = resume.strip()
            options = parse_connect_query(urlencode(merged))
        return dataclasses.replace(options, batch=False)

    async def accept(self) -> None:
        """The ``200`` with the event stream's headers (and CORS for an allowed page)."""
        headers = [*SSE_HEADERS, *cors_headers(self.scope, self.settings.origin_policy)]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    def write(self, conn: Connection) -> Coroutine[Any, Any, CloseReason]:
        """The connection's writer, a chunk of SSE messages per (batch of) frame(s)."""
        send = self.send

        def send_chunk(text: str) -> Awaitable[None]:
            chunk = {"type": "http.response.body", "body": text.encode(), "more_body": True}
            return send(chunk)  # type: ignore[no-any-return]

        return conn.write(send_chunk, self.settings.heartbeat_interval, encode=sse_chunk)

    async def read(self, conn: Connection, protocol: ClientProtocol) -> None:
        """Nothing comes from an event stream's client but its leaving."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                conn.close(CloseReason.CLIENT_LEFT)
                return

    async def close(self, code: int, retry_after: float | None = None) -> None:
        """End the stream: the client reconnects with ``Last-Event-ID``. An event stream
        has no close code; ``retry_after`` goes out as the stream's ``retry:`` field (in
        milliseconds), which an ``EventSource`` waits before it reconnects, as
        ``livepanel.js`` does."""
        if code == CLOSE_TRY_AGAIN_LATER:
            logger.info("livepanel: ended slow event stream %s", self.id)
        body = b"" if retry_after is None else sse_retry(retry_after).encode()
        end = {"type": "http.response.body", "body": body, "more_body": False}
        try:
            await asyncio.wait_for(self.send(end), CLOSE_TIMEOUT)
        except (Exception, asyncio.TimeoutError):  # a stalled or vanished client
            pass

    async def refuse(self, denial: Denial) -> None:
        """The denial's response; a page of an allowed origin may read why (CORS)."""
        extra = cors_headers(self.scope, self.settings.origin_policy)
        await self.refusals.refuse_http(self.scope, self.send, denial, extra)

    async def abandon(self, reason: str = "") -> None:
        """Nothing to say: the server ends the response itself."""
