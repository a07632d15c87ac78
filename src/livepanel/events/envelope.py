"""The envelope every event travels in: type, wire-form payload, UTC timestamp, id, audience.

:class:`Event` is what a broadcaster accepts, stores and sends;
:func:`format_timestamp` and :func:`parse_timestamp` are the wire's time
format (ISO 8601, UTC, milliseconds, ``Z``); :func:`audience_of` reads the
``audience=`` of ``publish``. Nothing here knows the registered types.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from livepanel.frames import EventFrame

__all__ = ["Event", "as_utc", "audience_of", "format_timestamp", "parse_timestamp"]

# --------------------------------------------------------------------------- time


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``, the wire's form; naive means UTC.

    Example::

        >>> format_timestamp(datetime(2026, 2, 21, 10, 0, 0, 123456))
        '2026-02-21T10:00:00.123Z'
    """
    # isoformat, unlike strftime("%Y"), zero-pads years before 1000
    return as_utc(value).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


_FRACTION = re.compile(r"(\d\d:\d\d:\d\d)[.,](\d+)")


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO 8601 date-time; a trailing ``Z`` means UTC, no offset means UTC.

    Fractions of a second may have any number of digits (nanoseconds, as Go's
    RFC 3339 timestamps carry, are cut to microseconds), on every Python version.

    Raises:
        ValueError: the string is not an ISO 8601 date-time.

    Example::

        >>> parse_timestamp("2026-02-21T11:00:00+01:00")
        datetime.datetime(2026, 2, 21, 10, 0, tzinfo=datetime.timezone.utc)
    """
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python 3.10 reads only 3 or 6 digits of a fraction: give it 6
    text = _FRACTION.sub(lambda m: m[1] + "." + (m[2] + "00000")[:6], text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 date-time, got {value!r}") from None
    return as_utc(parsed)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken as UTC already.

    Raises:
        ValueError: the instant falls outside the years datetime can hold, in UTC.

    Example::

        >>> from datetime import timedelta
        >>> as_utc(datetime(2026, 2, 21, 11, tzinfo=timezone(timedelta(hours=1))))
        datetime.datetime(2026, 2, 21, 10, 0, tzinfo=datetime.timezone.utc)
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01 at +02:00 falls before year 1 in UTC
        raise ValueError(f"{value.isoformat()} is out of range in UTC") from None


def _now() -> datetime:
    return _truncate_ms(datetime.now(timezone.utc))


def _truncate_ms(value: datetime) -> datetime:
    value = as_utc(value)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


# --------------------------------------------------------------------------- envelope


@dataclasses.dataclass(frozen=True)
class Event:
    """One event as it travels: type, wire-form payload, UTC timestamp and stream id.

    ``timestamp`` is kept at millisecond precision, the wire's, so that
    ``Event.from_json(e.to_json()) == e``. ``id`` is ``None`` until a broadcaster
    has accepted the event.

    Example::

        >>> e = Event("session.killed", {"sessionKey": "s1", "agentId": "a1"})
        >>> Event.from_json(e.to_json()) == e
        True
    """

    type: str
    payload: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    timestamp: datetime = dataclasses.field(default_factory=_now)
    id: str | None = None
    trace: Mapping[str, str] | None = dataclasses.field(default=None, compare=False, repr=False)
    """The publisher's trace context (W3C ``traceparent``...), set by :mod:`livepanel.tracing`;
    kept with the event in the backend and never sent to clients."""
    audience: frozenset[str] | None = dataclasses.field(default=None, compare=False, repr=False)
    """Who may see the event (``publish(..., audience=...)``): a connection receives it when
    it shares one of these strings, or sees everything; ``None`` is everyone. Kept with the
    event in the backend, never sent to clients."""

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise ValueError("Event.type must be a non-empty string")
        if not isinstance(self.payload, Mapping):
            raise ValueError(f"Event.payload must be a mapping, got {type(self.payload).__name__}")
        if not isinstance(self.timestamp, datetime):
            raise ValueError("Event.timestamp must be a datetime")
        if self.id is not None and not isinstance(self.id, str):
            raise ValueError("Event.id must be a string or None")
        object.__setattr__(self, "timestamp", _truncate_ms(self.timestamp))

    def to_dict(self) -> EventFrame:
        """The wire object: ``type``, ``timestamp``, ``payload`` and ``id`` when set."""
        data: EventFrame = {
            "type": self.type,
            "timestamp": format_timestamp(self.timestamp),
            "payload": self.payload,
        }
        if self.id is not None:
            data["id"] = self.id
        return data

    def to_json(self) -> str:
        """Serialize to the wire's compact JSON text (never contains a raw newline).

        Computed once per event: the live frame and every ``state`` frame holding
        the event share the text.
        """
        text: str | None = self.__dict__.get("_json")
        if text is None:
            text = json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)
            object.__setattr__(self, "_json", text)  # frozen: a cache, not a field
        return text

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Parse one wire frame.

        Raises:
            ValueError: not JSON, or not an object with a string ``type``, an
                ISO 8601 ``timestamp`` and an object ``payload``.
        """
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Event:
        """Build an event from an already-decoded wire object (see :meth:`from_json`)."""
        if not isinstance(data, dict):
            raise ValueError("an event must be a JSON object")
        kind = data.get("type")
        if not isinstance(kind, str) or not kind:
            raise ValueError("an event needs a non-empty string 'type'")
        payload = data.get("payload", {})
        if not isinstance(payload, dict):
            raise ValueError("an event's 'payload' must be an object")
        stamp = data.get("timestamp")
        timestamp = parse_timestamp(stamp) if stamp is not None else _now()
        event_id = data.get("id")
        if event_id is not None and not isinstance(event_id, str):
            raise ValueError("an event's 'id' must be a string")
        trace = data.get("trace")  # only in a backend's stored form, never on the wire
        if not (isinstance(trace, dict) and all(isinstance(v, str) for v in trace.values())):
            trace = None
        return cls(
            type=kind,
            payload=payload,
            timestamp=timestamp,
            id=event_id,
            trace=trace,
            audience=_stored_audience(data),
        )

    def stored_dict(self) -> dict[str, Any]:
        """The form a backend stores: the wire object plus what never goes on the wire
        (``audience``, ``trace``)."""
        data: dict[str, Any] = dict(self.to_dict())
        if self.audience is not None:
            data["audience"] = sorted(self.audience)
        if self.trace:
            data["trace"] = dict(self.trace)
        return data


def audience_of(value: Any) -> frozenset[str] | None:
    """An audience as ``publish(..., audience=...)`` takes it: ``None`` (everyone), one
    string, or an iterable of non-empty strings (at most 64 of 256 characters each).

    Raises:
        ValueError: anything else, e.g. an empty audience (nobody would see the event).

    Example::

        >>> sorted(audience_of({"team:ops", "user:alice"}))
        ['team:ops', 'user:alice']
        >>> audience_of("team:ops")
        frozenset({'team:ops'})
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    try:
        strings = frozenset(items)
    except TypeError:
        raise ValueError("audience must be a string or a set of strings") from None
    if not strings:
        raise ValueError("audience must name someone; pass None to reach every connection")
    if len(strings) > 64 or not all(isinstance(s, str) and 0 < len(s) <= 256 for s in strings):
        raise ValueError("audience holds at most 64 non-empty strings of at most 256 characters")
    return strings


def _stored_audience(data: Mapping[str, Any]) -> frozenset[str] | None:
    raw = data.get("audience")  # only in a backend's stored form, never on the wire
    if raw is None:
        return None
    try:
        return audience_of(raw if isinstance(raw, list) else None)
    except ValueError:
        return frozenset({"\x00unreadable"})  # a broken audience reaches nobody, never everyone
