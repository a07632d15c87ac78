"""The Python client: a reconnecting, resuming async iterator of events, built on wsproto.

:func:`connect` opens a WebSocket to a livepanel endpoint and yields every
:class:`~livepanel.events.Event` the server sends, in order. The protocol work
is done without I/O: :class:`~livepanel.client.wire.ClientWire` around
``wsproto`` (bytes in, frames out, pings answered) and
:class:`~livepanel.client.stream.ClientStream` (frames in; events, resume
points and acks out). :class:`Client` is the asyncio glue that reads the
socket, watches the heartbeat and reconnects with ``since`` when the
connection drops. The rules are in ``docs/client.md``.

Example::

    async with connect("wss://panel.example.com/ws", username="admin", password=pw) as client:
        async for event in client:
            print(event.type, event.payload)
"""

from livepanel.client.aio import Client, connect
from livepanel.client.endpoint import MAX_REDIRECTS
from livepanel.client.errors import (
    AuthenticationError,
    ConnectionFailed,
    HandshakeRejected,
    OpenTimeout,
    PermissionDenied,
    ResumeUnavailable,
)
from livepanel.client.stream import STABLE_AFTER, Status
from livepanel.client.wire import Accepted as Accepted
from livepanel.client.wire import ClientWire as ClientWire
from livepanel.client.wire import Closed as Closed
from livepanel.client.wire import FrameReceived as FrameReceived
from livepanel.client.wire import InvalidFrame as InvalidFrame
from livepanel.client.wire import Rejected as Rejected

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
