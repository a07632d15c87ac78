"""The client side of one connection without I/O: server bytes in, frames out (wsproto).

:class:`ClientWire` writes the handshake request, answers protocol pings and
closing handshakes, joins fragmented messages and splits ``?batch=1`` frames;
what it reads comes out as :data:`WireEvent` values. Nothing here touches a
socket or an event loop, so every edge case is a plain unit test.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any, Union

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
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from livepanel.protocol import CLOSE_NORMAL

__all__ = [
    "CLOSE_ABNORMAL",
    "MAX_REJECTION_BODY",
    "Accepted",
    "ClientWire",
    "Closed",
    "FrameReceived",
    "InvalidFrame",
    "Rejected",
    "WireEvent",
]

CLOSE_ABNORMAL = 1006
"""The close code :class:`Closed` reports for a connection that vanished without a closing
handshake (never sent on the wire)."""
MAX_REJECTION_BODY = 65536
"""Most bytes kept of the body of an HTTP answer that refuses the handshake."""


@dataclasses.dataclass(frozen=True)
class Accepted:
    """The server accepted the WebSocket handshake; ``welcome`` follows.

    Attributes:
        extensions: the extensions the server agreed to (``"permessage-deflate"``).

    Example::

        match event:
            case Accepted():
                ...  # wait for welcome
    """

    extensions: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Rejected:
    """The server answered the handshake with an HTTP response instead (its whole body).

    Example::

        >>> Rejected(401, ((b"www-authenticate", b'Basic realm="livepanel"'),), b"").status
        401
    """

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


@dataclasses.dataclass(frozen=True)
class FrameReceived:
    """One JSON object sent by the server (a batched text frame gives several).

    Example::

        >>> FrameReceived({"type": "ping", "payload": {}}).type
        'ping'
    """

    data: dict[str, Any]

    @property
    def type(self) -> str:
        """The frame's ``type``, or ``""`` when it has none."""
        kind = self.data.get("type")
        return kind if isinstance(kind, str) else ""


@dataclasses.dataclass(frozen=True)
class InvalidFrame:
    """A server message that is not a JSON object (skipped and logged by the client).

    Example::

        >>> InvalidFrame("[1]", "a frame must be a JSON object").error
        'a frame must be a JSON object'
    """

    text: str
    error: str


@dataclasses.dataclass(frozen=True)
class Closed:
    """The connection ended: the server's close code, or 1006 when it just vanished.

    Example::

        >>> Closed(1013, "slow consumer")
        Closed(code=1013, reason='slow consumer')
    """

    code: int
    reason: str = ""


WireEvent = Union[Accepted, Rejected, FrameReceived, InvalidFrame, Closed]  # noqa: UP007 - runtime
"""What :meth:`ClientWire.receive_data` reports: ``match`` on the type."""


class ClientWire:
    """The client side of one livepanel connection, without I/O: bytes in, frames out.

    It writes the handshake request, answers protocol pings and closing
    handshakes, joins fragmented messages and splits ``?batch=1`` frames into
    one :class:`FrameReceived` per JSON object. Whatever must go to the server waits in
    :meth:`data_to_send`.

    Args:
        host: the ``Host`` header value (``"example.com:8080"``).
        target: the request path and query string.
        headers: extra request headers, as ``(name, value)`` strings.
        deflate: offer the ``permessage-deflate`` extension (messages the server
            compresses are inflated here).

    Raises:
        ConnectionError: from :meth:`receive_data`, when the handshake response
            is not valid HTTP or not a valid WebSocket upgrade.

    Example::

        >>> wire = ClientWire("localhost:8000", "/ws?batch=1")
        >>> wire.data_to_send().startswith(b"GET /ws?batch=1 HTTP/1.1")
        True
    """

    def __init__(
        self,
        host: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        deflate: bool = False,
    ) -> None:
        self._ws = WSConnection(ConnectionType.CLIENT)
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        offer = [PerMessageDeflate()] if deflate else []
        request = Request(host=host, target=target, extra_headers=extra, extensions=offer)
        self._out = bytearray(self._ws.send(request))
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
                out.append(Accepted(tuple(e.name for e in event.extensions)))
            elif isinstance(event, RejectConnection):
                self._rejection = event
                if not event.has_body:
                    out.append(self._rejected())
            elif isinstance(event, RejectData):
                room = MAX_REJECTION_BODY - len(self._rejection_body)
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
                out.append(Closed(CLOSE_ABNORMAL, vanished))
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
            out.append(FrameReceived(data))
        else:
            out.append(InvalidFrame(line, "a frame must be a JSON object"))
    return out
