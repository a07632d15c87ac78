"""Stream entries to events and back: the trust boundary between Redis and the dashboards.

Anything that can write to the stream can reach every dashboard, so what is
read from it (entries, and the state kept beside it) is checked here as
:meth:`Broadcaster.publish` checks an event; what is written is the event's
stored JSON. Entry ids and replies are decoded here too, so the other parts
of the backend handle ``str`` ids and ``(ms, seq)`` positions only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from livepanel.events import RESERVED_TYPES, Event, prepare_payload, registered_types
from livepanel.protocol import decode_json, make_id

__all__ = [
    "CONTROL_FIELD",
    "FIELD",
    "MAX_ENTRY_SIZE",
    "START",
    "RejectedEntry",
    "control_of",
    "decode_entry",
    "decode_state",
    "encode_entry",
    "entry_list",
    "position",
    "stream_entries",
    "text",
]

FIELD = "event"
"""The field of a stream entry that holds an event's JSON."""
CONTROL_FIELD = "control"
"""The field of a control entry (a revocation): for the workers, never for clients."""
START = "0-0"
"""The entry id before every entry: a reader's position in an empty stream."""
MAX_ENTRY_SIZE = 4 * 1024 * 1024
"""Stream entries larger than this many bytes are skipped (and counted), never parsed.

``publish`` does not refuse a larger event (it cuts only ``stdout``/``stderr``): keep
payloads well below this."""

Position = tuple[int, ...]


class RejectedEntry(ValueError):
    """A stream entry that is not a valid livepanel event; ``reason`` says why, in words
    that hold nothing of the entry itself (safe to log).

    Example::

        >>> try:
        ...     decode_entry({b"event": b'{"type": "welcome", "payload": {}}'})
        ... except RejectedEntry as exc:
        ...     print(exc.reason)
        reserved type: welcome
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_entry(event: Event) -> str:
    """The entry's JSON: the wire form, plus its audience and trace context when it has them.

    Example::

        redis.xadd("livepanel:events", {FIELD: encode_entry(event)})  # what the script does
    """
    if not event.trace and event.audience is None:
        return event.to_json()
    return json.dumps(event.stored_dict(), separators=(",", ":"), ensure_ascii=False)


def decode_entry(fields: Any) -> Event:
    """The event a stream entry holds, checked as :meth:`Broadcaster.publish` checks one.

    Anything that can write to the stream can reach every dashboard, so an entry
    is trusted no more than a publisher: at most :data:`MAX_ENTRY_SIZE` bytes of
    strict UTF-8 JSON without ``NaN``, ``Infinity`` or numbers that overflow; a
    registered type that is not one of the server's own frames
    (:data:`livepanel.events.RESERVED_TYPES`); and a payload validated, redacted and cut by
    :func:`livepanel.events.prepare_payload` (the same check is harmless for
    entries livepanel wrote itself). A type is registered per process: every
    process reading the stream must import the payload classes of every type
    published to it.

    Raises:
        RejectedEntry: the entry is none of that.

    Example::

        >>> decode_entry({b"event": b'{"type":"session.killed","timestamp":'
        ...     b'"2026-02-21T10:00:00.000Z","payload":{"sessionKey":"s1","agentId":"a1"}}'}).type
        'session.killed'
    """
    raw = (fields.get(FIELD.encode()) or fields.get(FIELD)) if isinstance(fields, dict) else None
    if not isinstance(raw, (bytes, str)):
        raise RejectedEntry(f"not a livepanel event (no {FIELD!r} field)")
    if len(raw) > MAX_ENTRY_SIZE:
        raise RejectedEntry(f"larger than {MAX_ENTRY_SIZE} bytes")
    try:
        decoded = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = decode_json(decoded)
        event = Event.from_dict(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise RejectedEntry("not a livepanel event (JSON with type, timestamp, payload)") from None
    if event.type in RESERVED_TYPES:
        raise RejectedEntry(f"reserved type: {event.type}")
    if event.type not in registered_types():
        raise RejectedEntry("unregistered event type")  # its name is the writer's choice
    try:
        payload = prepare_payload(event.type, event.payload)
    except (ValueError, TypeError, RecursionError):
        # the message may quote the entry's values: name only the type, a registered name
        raise RejectedEntry(f"invalid payload for {event.type}") from None
    return Event(event.type, payload, event.timestamp, trace=event.trace, audience=event.audience)


def control_of(fields: Any) -> dict[str, Any] | None:
    """A control entry's message (``{}`` when unreadable), or ``None`` for any other entry.

    Example::

        >>> control_of({b"control": b'{"op": "disconnect"}'}), control_of({b"event": b"{}"})
        ({'op': 'disconnect'}, None)
    """
    if not isinstance(fields, dict):
        return None
    raw = fields.get(CONTROL_FIELD.encode(), fields.get(CONTROL_FIELD))
    if raw is None:
        return None
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return message if isinstance(message, dict) else {}


def decode_state(epoch: str, fields: Mapping[str, str]) -> list[Event]:
    """The events of the state hash kept in Redis, oldest update first, each with its id.

    A value is ``"<seq, 20 digits><entry id>\\n<event JSON>"`` (see
    :mod:`livepanel.backends.redis.scripts`); bookkeeping fields (``!...``,
    ``#...``) and values that are not valid events are left out.

    Example::

        fields = await redis.hgetall("livepanel:events:state")  # decoded to str
        fold.apply_all(decode_state(epoch, fields))
    """
    entries: list[tuple[str, Event]] = []
    for field, value in fields.items():
        if field[:1] in ("!", "#"):
            continue
        head, _, stored = value.partition("\n")
        try:
            event = decode_entry({FIELD: stored})
        except RejectedEntry:
            continue  # not something livepanel wrote: leave it out of the state
        entries.append((head[:20], dataclasses.replace(event, id=make_id(epoch, head[20:]))))
    entries.sort(key=lambda item: item[0])
    return [event for _, event in entries]


def text(value: Any) -> str:
    """A reply item as ``str`` (redis-py gives ``bytes`` unless it decodes responses).

    Example::

        >>> text(b"1700000000000-3"), text("0-0")
        ('1700000000000-3', '0-0')
    """
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def position(entry_id: str) -> Position:
    """An entry id as ``(ms, seq)``, to compare entries in stream order.

    Example::

        >>> position("1700000000000-3") < position("1700000000001-0")
        True
    """
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq or 0))


def entry_list(entries: Any) -> list[tuple[str, Any]]:
    """An ``XRANGE`` reply as ``[(entry id, fields), ...]``.

    Example::

        >>> entry_list([(b"1-0", {b"event": b"{}"})])
        [('1-0', {b'event': b'{}'})]
    """
    return [(text(entry_id), fields) for entry_id, fields in entries or ()]


def stream_entries(reply: Any) -> list[tuple[str, Any]]:
    """The entries of the one stream in an ``XREAD`` reply (a RESP2 list or a RESP3 map).

    Example::

        >>> stream_entries({b"livepanel:events": [(b"1-0", {})]})
        [('1-0', {})]
    """
    if not reply:
        return []
    if isinstance(reply, dict):
        return entry_list(next(iter(reply.values())))
    return entry_list(reply[0][1])
