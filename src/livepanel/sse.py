"""Server-Sent Events: the endpoint's frames as an ``text/event-stream`` (SPEC section 9).

The same connection as a WebSocket's, written differently: each server frame
becomes one SSE message, ``event: <type>``, ``id: <event id>`` (events only) and
``data: <the frame's JSON>``; a heartbeat is the comment ``: ping``. Nothing is
parsed or encoded again per client: an event's type and id come with its frame,
and its JSON is the one the broadcast made.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl

from asgiref.typing import WWWScope

from livepanel.connection import Frame

__all__ = ["SSE_HEADERS", "is_fallback", "sse_chunk", "sse_retry", "wants_event_stream"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each message on at once
]
"""The response headers of an event stream."""

_TYPE_AT = len('{"type":"')


def wants_event_stream(scope: WWWScope) -> bool:
    """Whether a plain HTTP request asks for an event stream: ``GET`` with
    ``Accept: text/event-stream``.

    Example::

        >>> wants_event_stream({"method": "GET", "headers": [(b"accept", b"text/event-stream")]})
        True
    """
    if scope.get("method") != "GET":
        return False
    for key, value in scope["headers"]:
        if key.lower() == b"accept" and b"text/event-stream" in value.lower():
            return True
    return False


def is_fallback(scope: WWWScope) -> bool:
    """Whether an event stream request says it came after WebSocket handshakes failed:
    ``?fallback=1``, which ``livepanel.js`` adds when ``transport: "auto"`` falls back.

    Example::

        >>> is_fallback({"query_string": b"batch=1&fallback=1"})
        True
    """
    query = (scope.get("query_string") or b"").decode("latin-1")
    return any(key == "fallback" and value == "1" for key, value in parse_qsl(query))


def sse_retry(seconds: float) -> str:
    """The stream's last words when it ends with a hint: a ``retry:`` field (milliseconds,
    digits only, as the field wants) that tells the client when to reconnect.

    Example::

        >>> sse_retry(2.349)
        'retry: 2349\\n\\n'
    """
    return f"retry: {max(0, round(seconds * 1000))}\n\n"


def sse_chunk(frames: Sequence[Frame]) -> str:
    """The SSE messages of ``frames``, in order, as one chunk of the stream.

    Example::

        >>> from livepanel.protocol import control_frame
        >>> sse_chunk([Frame(None, control_frame("ping", {}))])
        ': ping\\n\\n'
    """
    parts: list[str] = []
    for frame in frames:
        event = frame.event
        if event is not None:
            parts.append(f"event: {event.type}\nid: {event.id}\ndata: {frame.text}\n\n")
            continue
        text = frame.text  # a control frame: '{"type":"<type>",...}' (protocol.control_frame)
        kind = text[_TYPE_AT : text.index('"', _TYPE_AT)]
        parts.append(": ping\n\n" if kind == "ping" else f"event: {kind}\ndata: {text}\n\n")
    return "".join(parts)
