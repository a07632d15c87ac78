"""The WebSocket protocol without I/O: client frames in, replies and decisions out.

Nothing here touches a socket or an event loop. :class:`ClientProtocol` takes
the text (or bytes) of one client frame and returns what to do about it: a
frame to send back, a close code, a new subscription or an acknowledgement.
The ASGI module is glue that carries those actions out. The frames' shapes
are the typed dicts of :mod:`livepanel.frames`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Union
from urllib.parse import parse_qsl

from livepanel.__about__ import __version__
from livepanel.events import format_timestamp
from livepanel.frames import ErrorCode, ErrorFrame, WelcomeFrame
from livepanel.type_filter import MAX_GLOB_LENGTH, MAX_GLOBS, TypeFilter, check_globs, type_globs

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_SERVICE_RESTART",
    "CLOSE_TRY_AGAIN_LATER",
    "MAX_GLOBS",
    "MAX_GLOB_LENGTH",
    "MAX_PONG_SIZE",
    "REPLAY_EVENTS_PER_TOKEN",
    "SERVER_NAME",
    "STATE_BYTES_PER_TOKEN",
    "Ack",
    "Action",
    "ClientProtocol",
    "Close",
    "ConnectOptions",
    "NonFiniteNumber",
    "Reply",
    "Subscribe",
    "TypeFilter",
    "control_frame",
    "decode_json",
    "error_frame",
    "finite_float",
    "make_id",
    "parse_connect_query",
    "parse_id",
    "type_globs",
    "welcome_frame",
]

CLOSE_NORMAL = 1000
"""Close code: the connection is done (sent by the client; the server never ends a stream)."""
CLOSE_GOING_AWAY = 1001
"""Close code: the server is shutting down; reconnect with ``since``."""
CLOSE_POLICY_VIOLATION = 1008
"""Close code: kept sending after ``rate_limited`` (or a refused handshake without HTTP answers)."""
CLOSE_MESSAGE_TOO_BIG = 1009
"""Close code: a client frame was larger than ``max_message_size`` bytes."""
CLOSE_INTERNAL_ERROR = 1011
"""Close code: writing to the connection failed on the server's side; reconnect with ``since``."""
CLOSE_SERVICE_RESTART = 1012
"""Close code: the worker is shutting down; reconnect with ``since`` after the reason's
``retry_after=<seconds>``."""
CLOSE_TRY_AGAIN_LATER = 1013
"""Close code: a slow consumer fell ``queue_size`` events behind, or (before any frame) the
worker is over its admission rate; reconnect with ``since``, after the reason's
``retry_after=<seconds>`` when it has one."""

SERVER_NAME = f"livepanel/{__version__}"
"""``welcome.server``: ``"livepanel/<version>"``, e.g. ``"livepanel/0.1.0"``."""
MAX_PONG_SIZE = 4096
"""Most bytes of a ``pong`` frame: a ping whose echo would be larger is ``invalid_message``."""
REPLAY_EVENTS_PER_TOKEN = 100
"""A replay costs the client one rate-limit token per this many events it replays."""
STATE_BYTES_PER_TOKEN = 16384
"""A ``state`` frame costs the client one rate-limit token per this many bytes of it."""

_ID = re.compile(r"([A-Za-z0-9]{1,32}):([0-9]{1,20}(?:-[0-9]{1,20})?)")


# --------------------------------------------------------------------------- ids


def make_id(epoch: str, position: str) -> str:
    """The wire id of the event at ``position`` (``"17"`` or ``"1700000000000-0"``) in ``epoch``.

    Example::

        >>> make_id("3f9a1c2e", "17")
        '3f9a1c2e:17'
    """
    return f"{epoch}:{position}"


def parse_id(value: object) -> tuple[str, tuple[int, ...]]:
    """Split a wire id into its epoch and a sortable position.

    Raises:
        ValueError: ``value`` is not an id livepanel issued.

    Example::

        >>> parse_id("3f9c1a2b4d5e:1700000000000-3")
        ('3f9c1a2b4d5e', (1700000000000, 3))
    """
    match = _ID.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"malformed event id {value!r}; expected an id from a previous event")
    epoch, position = match.groups()
    return epoch, tuple(int(part) for part in position.split("-"))


# --------------------------------------------------------------------------- frames


def control_frame(kind: str, payload: Mapping[str, Any], now: datetime | None = None) -> str:
    """A server frame that is not a broadcast event (welcome, ping, pong, error).

    Example::

        >>> from datetime import datetime, timezone
        >>> control_frame("ping", {}, datetime(2026, 2, 21, 10, tzinfo=timezone.utc))
        '{"type":"ping","timestamp":"2026-02-21T10:00:00.000Z","payload":{}}'
    """
    frame = {"type": kind, "timestamp": _stamp(now), "payload": payload}
    return _dumps(frame)


def error_frame(code: ErrorCode, message: str) -> str:
    """An ``error`` frame (:class:`~livepanel.frames.ErrorFrame`) with one of the codes of
    the wire protocol.

    Example::

        >>> error_frame("invalid_json", "the message is not valid JSON")  # doctest: +ELLIPSIS
        '{"type":"error","timestamp":"...","payload":{"code":"invalid_json","message":"the ..."}}'
    """
    frame: ErrorFrame = {
        "type": "error",
        "timestamp": _stamp(None),
        "payload": {"code": code, "message": message},
    }
    return _dumps(frame)


def welcome_frame(
    connection_id: str, heartbeat_interval: float, last_event_id: str, schema: str | None = None
) -> str:
    """The first frame of every connection (:class:`~livepanel.frames.WelcomeFrame`).

    ``schema``: the fingerprint of the registered event types, when there is one.

    Example::

        >>> welcome_frame("c1", 25.0, "3f9a1c2e:0")  # doctest: +ELLIPSIS
        '{"type":"welcome",...,"payload":{"connectionId":"c1","heartbeatInterval":25.0,...}}'
    """
    frame: WelcomeFrame = {
        "type": "welcome",
        "timestamp": _stamp(None),
        "payload": {
            "connectionId": connection_id,
            "heartbeatInterval": heartbeat_interval,
            "lastEventId": last_event_id,
            "server": SERVER_NAME,
        },
    }
    if schema is not None:
        frame["payload"]["schema"] = schema
    return _dumps(frame)


def _stamp(now: datetime | None) -> str:
    return format_timestamp(now or datetime.now(timezone.utc))


def _dumps(frame: Mapping[str, Any]) -> str:
    # ASCII escapes: a pong may echo lone surrogates, which a UTF-8 text frame cannot carry
    return json.dumps(frame, separators=(",", ":"), allow_nan=False)


# --------------------------------------------------------------------------- JSON from outside


class NonFiniteNumber(ValueError):
    """Well-formed JSON whose number overflows a float (``1e999``): nothing to echo back.

    Example::

        >>> decode_json('{"n": 1e999}')
        Traceback (most recent call last):
          ...
        livepanel.protocol.NonFiniteNumber: 1e999
    """


def finite_float(text: str) -> float:
    """The number parser for JSON from outside: a float, never an infinity.

    Raises:
        NonFiniteNumber: the number overflows a float.

    Example::

        >>> finite_float("2.5")
        2.5
    """
    value = float(text)
    if math.isinf(value):
        raise NonFiniteNumber(text[:32])
    return value


def decode_json(text: str | bytes) -> Any:
    """Parse JSON that came from outside (a client's message, a stored entry): ``NaN``,
    ``Infinity`` and numbers that overflow a float are refused, as clients cannot parse them.

    Raises:
        NonFiniteNumber: a number overflows a float (a :class:`ValueError`).
        ValueError: not JSON, ``NaN`` and ``Infinity`` included.
        RecursionError: nested too deeply.

    Example::

        >>> decode_json('{"type": "ping", "payload": {"n": 1.5}}')
        {'type': 'ping', 'payload': {'n': 1.5}}
    """
    return json.loads(text, parse_constant=_refuse_constant, parse_float=finite_float)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_since(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("since must be an event id string")
    parse_id(value)
    return value


# --------------------------------------------------------------------------- actions


@dataclasses.dataclass(frozen=True)
class Reply:
    """Send this text frame to the client.

    Example::

        >>> ClientProtocol().receive_text('{"type": "ping"}')  # doctest: +ELLIPSIS
        [Reply(text='{"type":"pong","timestamp":"...","payload":{}}')]
    """

    text: str


@dataclasses.dataclass(frozen=True)
class Close:
    """Close the connection with this code.

    Example::

        >>> ClientProtocol(max_message_size=8).receive_text('{"type": "ping"}')
        [Close(code=1009, reason='message too big')]
    """

    code: int
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Subscribe:
    """Replace the connection's filter; replay after ``since`` when it is set.

    Example::

        >>> ClientProtocol().receive_text('{"type": "subscribe", "payload": {"types": ["cron.*"]}}')
        [Subscribe(types=('cron.*',), since=None, state=False)]

    ``state`` asks for a ``state`` frame (``"state": true``), unless ``since``
    resumes.
    """

    types: tuple[str, ...]
    since: str | None = None
    state: bool = False


@dataclasses.dataclass(frozen=True)
class Ack:
    """The client has processed the event with this id.

    Example::

        >>> ClientProtocol().receive_text('{"type": "ack", "payload": {"id": "3f9a1c2e:7"}}')
        [Ack(id='3f9a1c2e:7')]
    """

    id: str


Action = Union[Reply, Close, Subscribe, Ack]  # noqa: UP007 - a runtime alias on 3.10
"""What :meth:`ClientProtocol.receive_text` asks the I/O layer to do: ``match`` on the type."""


@dataclasses.dataclass(frozen=True)
class ConnectOptions:
    """What the connect URL's query string asks for.

    Example::

        >>> options = parse_connect_query(b"types=session.*&batch=1")
        >>> options.subscribe, options.batch
        (Subscribe(types=('session.*',), since=None, state=False), True)
    """

    subscribe: Subscribe | None = None
    batch: bool = False
    error: str | None = None


def parse_connect_query(query_string: bytes | str) -> ConnectOptions:
    """Read ``?types=a,b&since=<id>&state=1&batch=1`` from the connect URL.

    A malformed value does not refuse the connection: it comes back as
    ``error`` (an ``invalid_message`` frame to send after ``welcome``).

    Example::

        >>> parse_connect_query("since=yesterday").error
        "connect URL: malformed event id 'yesterday'; expected an id from a previous event"
    """
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    params = dict(parse_qsl(query_string, keep_blank_values=True))
    batch = params.get("batch", "").lower() in ("1", "true", "yes")
    state = params.get("state", "").lower() in ("1", "true", "yes")
    if "types" not in params and "since" not in params and not state:
        return ConnectOptions(batch=batch)
    raw_types = params.get("types")
    globs = [g.strip() for g in raw_types.split(",") if g.strip()] if raw_types else ["*"]
    try:
        types = check_globs(globs)
        since = _check_since(params.get("since") or None)
    except ValueError as exc:
        return ConnectOptions(batch=batch, error=f"connect URL: {exc}")
    return ConnectOptions(subscribe=Subscribe(types, since, state), batch=batch)


# --------------------------------------------------------------------------- the machine


class ClientProtocol:
    """Turns one connection's client frames into actions.

    Args:
        max_message_size: frames longer than this many bytes close with 1009.
        client_rate: sustained client messages per second (``None``: unlimited).
        client_burst: how many messages may arrive at once before the rate applies.
        clock: a monotonic clock in seconds (tests pass their own).

    Example::

        >>> p = ClientProtocol()
        >>> [type(a).__name__ for a in p.receive_text('{"type": "ping"}')]
        ['Reply']
    """

    def __init__(
        self,
        *,
        max_message_size: int = 65536,
        client_rate: float | None = 20.0,
        client_burst: int = 40,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_message_size = max_message_size
        self.client_rate = client_rate if client_rate and client_rate > 0 else None
        self.client_burst = max(1, client_burst)
        self._clock = clock
        self._tokens = float(self.client_burst)
        self._refilled = clock()
        self._warned = False
        self._refused_busy = False  # told once that a replay or state is still in flight
        self.last_ack: str | None = None

    # -- rate limit

    def _take_token(self) -> bool:
        if self.client_rate is None:
            return True
        now = self._clock()
        elapsed = max(0.0, now - self._refilled)
        self._refilled = now
        self._tokens = min(float(self.client_burst), self._tokens + elapsed * self.client_rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._warned = False
            return True
        return False

    def charge(self, replayed: int, state_bytes: int = 0) -> None:
        """Charge a replay of ``replayed`` events and a ``state`` frame of ``state_bytes``
        bytes to the rate bucket (it may go negative: the client's next messages then wait,
        or are ``rate_limited``)."""
        self._refused_busy = False
        if self.client_rate is not None and (replayed > 0 or state_bytes > 0):
            self._tokens -= replayed / REPLAY_EVENTS_PER_TOKEN + state_bytes / STATE_BYTES_PER_TOKEN

    def refuse_busy(self, message: str) -> list[Action]:
        """A ``subscribe`` with ``since`` or ``state`` while the last replay or state frame
        is still unsent: ``rate_limited`` the first time, close 1008 if it asks again
        before that one went out.

        Example::

            >>> p = ClientProtocol()
            >>> [type(a).__name__ for a in p.refuse_busy("one at a time")]
            ['Reply']
            >>> [a.code for a in p.refuse_busy("one at a time")]
            [1008]
        """
        if self._refused_busy:
            return [Close(CLOSE_POLICY_VIOLATION, "kept asking for a replay or state")]
        self._refused_busy = True
        return [Reply(error_frame("rate_limited", message))]

    # -- input

    def receive_bytes(self, data: bytes) -> list[Action]:
        """A binary frame: livepanel speaks JSON text frames only."""
        if len(data) > self.max_message_size:
            return [Close(CLOSE_MESSAGE_TOO_BIG, "message too big")]
        if not self._take_token():
            return self._rate_limited()
        return [Reply(error_frame("invalid_message", "send JSON in text frames, not binary"))]

    def receive_text(self, text: str) -> list[Action]:
        """One text frame from the client."""
        # a str of n code points is between n and 4n UTF-8 bytes: encode only when unsure
        if len(text) > self.max_message_size or (
            len(text) * 4 > self.max_message_size
            and len(text.encode("utf-8", "surrogatepass")) > self.max_message_size
        ):
            return [Close(CLOSE_MESSAGE_TOO_BIG, "message too big")]
        if not self._take_token():
            return self._rate_limited()
        try:
            message = decode_json(text)
        except NonFiniteNumber:
            return [_invalid("numbers must be finite (1e999 is not)")]
        except ValueError:
            return [Reply(error_frame("invalid_json", "the message is not valid JSON"))]
        except RecursionError:
            return [Reply(error_frame("invalid_json", "the message is nested too deeply"))]
        return self._dispatch(message)

    def _rate_limited(self) -> list[Action]:
        if self._warned:
            return [Close(CLOSE_POLICY_VIOLATION, "rate limit exceeded")]
        self._warned = True
        return [Reply(error_frame("rate_limited", "too many messages; slow down"))]

    def _dispatch(self, message: Any) -> list[Action]:
        if not isinstance(message, dict):
            return [_invalid("a message is a JSON object with a 'type'")]
        kind = message.get("type")
        if not isinstance(kind, str):
            return [_invalid("a message needs a string 'type'")]
        payload = message.get("payload", {})
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            return [_invalid("'payload' must be an object")]
        if "timestamp" in message and not isinstance(message["timestamp"], (str, int, float)):
            return [_invalid("'timestamp' must be an ISO 8601 string")]
        if kind == "ping":
            try:
                pong = control_frame("pong", payload)
            except RecursionError:  # parsed just below the depth limit, too deep to encode back
                return [_invalid("'payload' is nested too deeply")]
            if len(pong) > MAX_PONG_SIZE:  # echoes are ASCII-escaped: up to 6x what was sent
                return [_invalid(f"a ping's payload is echoed up to {MAX_PONG_SIZE} bytes")]
            return [Reply(pong)]
        if kind == "ack":
            event_id = payload.get("id")
            try:
                parse_id(event_id)
            except ValueError:
                return [_invalid("ack needs payload.id, the id of an event")]
            self.last_ack = str(event_id)
            return [Ack(self.last_ack)]
        if kind == "subscribe":
            try:
                types = check_globs(payload.get("types", ["*"]))
                since = _check_since(payload.get("since"))
                state = payload.get("state", False)
                if not isinstance(state, bool):
                    raise ValueError("payload.state must be true or false")
            except ValueError as exc:
                return [_invalid(str(exc))]
            return [Subscribe(types, since, state)]
        shown = kind if len(kind) <= 64 else kind[:64] + "..."
        return [
            Reply(
                error_frame(
                    "unknown_type",
                    f"unknown message type {shown!r}; expected ping, ack or subscribe",
                )
            )
        ]


def _invalid(message: str) -> Reply:
    return Reply(error_frame("invalid_message", message))
