"""Rows to events and back: the trust boundary between the table and the dashboards.

Anything that can insert into the stream's table can reach every dashboard,
so what is read from it is checked as :meth:`Broadcaster.publish` checks an
event; what is written is the event's stored JSON (its wire form, plus its
audience and trace context).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from livepanel.events import RESERVED_TYPES, Event, prepare_payload, registered_types
from livepanel.protocol import decode_json, make_id

__all__ = ["MAX_ROW_SIZE", "RejectedRow", "control_of", "decode_row", "encode_event"]

MAX_ROW_SIZE = 4 * 1024 * 1024
"""Rows whose body is larger than this many characters are skipped (and counted), never parsed."""


class RejectedRow(ValueError):
    """A row that is not a valid livepanel event; ``reason`` holds nothing of the row itself.

    Example::

        >>> try:
        ...     decode_row('{"type": "welcome", "payload": {}}', "e1", 1)
        ... except RejectedRow as exc:
        ...     print(exc.reason)
        reserved type: welcome
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_event(event: Event) -> str:
    """The row's body: the wire form, plus the audience and trace context when there are.

    Example::

        >>> encode_event(Event("test.x", {}, id=None))[:16]
        '{"type":"test.x"'
    """
    if not event.trace and event.audience is None:
        return event.to_json()
    return json.dumps(event.stored_dict(), separators=(",", ":"), ensure_ascii=False)


def decode_row(body: str, epoch: str, position: int) -> Event:
    """The event a row holds, with its id, checked as :meth:`Broadcaster.publish` checks one.

    Raises:
        RejectedRow: the body is not a registered, valid event, or it is too large.

    Example::

        >>> import livepanel.events.builtin  # the built-in types are opt-in
        >>> decode_row('{"type":"session.killed","timestamp":"2026-02-21T10:00:00.000Z",'
        ...            '"payload":{"sessionKey":"s1","agentId":"a1"}}', "e1", 7).id
        'e1:7'
    """
    if len(body) > MAX_ROW_SIZE:
        raise RejectedRow(f"larger than {MAX_ROW_SIZE} characters")
    try:
        event = Event.from_dict(decode_json(body))
    except (ValueError, RecursionError):
        raise RejectedRow("not a livepanel event (JSON with type, timestamp, payload)") from None
    if event.type in RESERVED_TYPES:
        raise RejectedRow(f"reserved type: {event.type}")
    if event.type not in registered_types():
        raise RejectedRow("unregistered event type")  # its name is the writer's choice
    try:
        payload = prepare_payload(event.type, event.payload)
    except (ValueError, TypeError, RecursionError):
        raise RejectedRow(f"invalid payload for {event.type}") from None  # values stay out
    return dataclasses.replace(event, payload=payload, id=make_id(epoch, str(position)))


def control_of(body: str) -> dict[str, Any]:
    """A control row's message (``{}`` when unreadable).

    Example::

        >>> control_of('{"op": "disconnect", "user": "alice"}')
        {'op': 'disconnect', 'user': 'alice'}
    """
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return message if isinstance(message, dict) else {}
