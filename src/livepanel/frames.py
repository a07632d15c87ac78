"""The wire's frames as typed dicts: what ``json.loads`` of a frame gives, for type checkers.

Server to client: :class:`WelcomeFrame`, :class:`EventFrame`,
:class:`StateFrame`, :class:`ErrorFrame`, :class:`PingFrame` and
:class:`PongFrame`; client to server: :class:`SubscribeMessage`,
:class:`AckMessage` and :class:`PingMessage`. The keys are the wire's
(camelCase), as ``docs/protocol.md`` describes them. Nothing here validates: a
frame read from a socket is only as well-formed as its sender made it, so
check what you rely on before you ``cast``.

Example::

    import json
    from typing import cast

    from livepanel.frames import WelcomeFrame

    welcome = cast(WelcomeFrame, json.loads(text))
    print(welcome["payload"]["lastEventId"])
"""

from collections.abc import Mapping
from typing import Any, Literal, Union

from typing_extensions import NotRequired, TypedDict

__all__ = [
    "AckMessage",
    "AckPayload",
    "ClientMessage",
    "ErrorCode",
    "ErrorFrame",
    "ErrorPayload",
    "EventFrame",
    "PingFrame",
    "PingMessage",
    "PongFrame",
    "ServerFrame",
    "StateCollection",
    "StateFrame",
    "StatePayload",
    "StateTypeRule",
    "SubscribeMessage",
    "SubscribePayload",
    "WelcomeFrame",
    "WelcomePayload",
]

ErrorCode = Literal[
    "invalid_json", "invalid_message", "unknown_type", "rate_limited", "resume_unavailable"
]
"""The codes of an ``error`` frame."""


# --------------------------------------------------------------------------- server to client


class EventFrame(TypedDict):
    """A broadcast event: ``{"type", "timestamp", "payload", "id"}``.

    ``id`` is on every event a server sends; only an :class:`~livepanel.events.Event`
    not yet accepted by a broadcaster has none.

    Example::

        >>> frame: EventFrame = {"type": "deploy.finished", "timestamp": "2026-02-21T10:00:00.123Z",
        ...                      "payload": {"service": "api"}, "id": "3f9a1c2e:17"}
    """

    type: str
    timestamp: str
    payload: Mapping[str, Any]
    id: NotRequired[str]


class WelcomePayload(TypedDict):
    """The payload of :class:`WelcomeFrame`.

    Example::

        >>> payload: WelcomePayload = {"connectionId": "c1", "heartbeatInterval": 25.0,
        ...                            "lastEventId": "3f9a1c2e:0", "server": "livepanel/0.1.0"}
    """

    connectionId: str
    heartbeatInterval: float
    lastEventId: str
    server: str
    schema: NotRequired[str]  # the event types' fingerprint (livepanel.schema.fingerprint)


class WelcomeFrame(TypedDict):
    """The first frame of every connection.

    Example::

        >>> import json
        >>> from livepanel.protocol import welcome_frame
        >>> frame: WelcomeFrame = json.loads(welcome_frame("c1", 25.0, "3f9a1c2e:0"))
        >>> frame["payload"]["lastEventId"]
        '3f9a1c2e:0'
    """

    type: Literal["welcome"]
    timestamp: str
    payload: WelcomePayload


class StateCollection(TypedDict):
    """One collection of a ``state`` frame: its layout and its entries, whole events.

    Example::

        >>> sessions: StateCollection = {"key": "sessionKey", "keep": None, "entries": []}
    """

    key: str | None
    keep: int | None
    entries: list[EventFrame]


class StateTypeRule(TypedDict):
    """How events of one type change a collection (``removes``: delete the entry by key).

    Example::

        >>> rule: StateTypeRule = {"collection": "sessions", "removes": True}
    """

    collection: str
    removes: bool


class StatePayload(TypedDict):
    """The payload of :class:`StateFrame`: the fold of the stream up to ``lastEventId``.

    Example::

        >>> payload: StatePayload = {"lastEventId": "3f9a1c2e:42", "collections": {},
        ...                          "types": {}}
    """

    lastEventId: str
    collections: dict[str, StateCollection]
    types: dict[str, StateTypeRule]


class StateFrame(TypedDict):
    """The state on connect (``?state=1``), before the events that follow it.

    Example::

        >>> frame: StateFrame = {"type": "state", "timestamp": "2026-02-21T10:00:00.123Z",
        ...     "payload": {"lastEventId": "3f9a1c2e:42", "collections": {}, "types": {}}}
    """

    type: Literal["state"]
    timestamp: str
    payload: StatePayload


class ErrorPayload(TypedDict):
    """The payload of :class:`ErrorFrame`.

    Example::

        >>> payload: ErrorPayload = {"code": "invalid_json", "message": "not JSON"}
    """

    code: ErrorCode
    message: str


class ErrorFrame(TypedDict):
    """A client message the server refused, or a ``since`` it cannot resume after.

    Example::

        >>> import json
        >>> from livepanel.protocol import error_frame
        >>> frame: ErrorFrame = json.loads(error_frame("rate_limited", "slow down"))
        >>> frame["payload"]["code"]
        'rate_limited'
    """

    type: Literal["error"]
    timestamp: str
    payload: ErrorPayload


class PingFrame(TypedDict):
    """The server's heartbeat, sent after ``heartbeatInterval`` seconds of silence.

    Example::

        >>> frame: PingFrame = {"type": "ping", "timestamp": "2026-02-21T10:00:00.123Z",
        ...                     "payload": {}}
    """

    type: Literal["ping"]
    timestamp: str
    payload: dict[str, Any]


class PongFrame(TypedDict):
    """The answer to a client's ``ping``: its payload, echoed.

    Example::

        >>> frame: PongFrame = {"type": "pong", "timestamp": "2026-02-21T10:00:00.123Z",
        ...                     "payload": {"n": 1}}
    """

    type: Literal["pong"]
    timestamp: str
    payload: dict[str, Any]


ServerFrame = Union[  # noqa: UP007 - a runtime alias on 3.10
    WelcomeFrame, EventFrame, StateFrame, ErrorFrame, PingFrame, PongFrame
]
"""Any frame a server sends; tell them apart by ``type`` (an event's is its event type)."""


# --------------------------------------------------------------------------- client to server


class SubscribePayload(TypedDict):
    """The payload of :class:`SubscribeMessage`; every key may be left out.

    Example::

        >>> payload: SubscribePayload = {"types": ["session.*"], "since": "3f9a1c2e:17"}
    """

    types: NotRequired[list[str]]
    since: NotRequired[str | None]
    state: NotRequired[bool]


class SubscribeMessage(TypedDict):
    """Replace the type filter; replay after ``since``; ask for a ``state`` frame.

    Example::

        >>> message: SubscribeMessage = {"type": "subscribe", "payload": {"types": ["cron.*"]}}
    """

    type: Literal["subscribe"]
    timestamp: NotRequired[str]
    payload: NotRequired[SubscribePayload]


class AckPayload(TypedDict):
    """The payload of :class:`AckMessage`.

    Example::

        >>> payload: AckPayload = {"id": "3f9a1c2e:17"}
    """

    id: str


class AckMessage(TypedDict):
    """The newest event the client's handlers have processed.

    Example::

        >>> message: AckMessage = {"type": "ack", "payload": {"id": "3f9a1c2e:17"}}
    """

    type: Literal["ack"]
    timestamp: NotRequired[str]
    payload: AckPayload


class PingMessage(TypedDict):
    """Asks for a ``pong`` echoing ``payload``.

    Example::

        >>> message: PingMessage = {"type": "ping", "payload": {"n": 1}}
    """

    type: Literal["ping"]
    timestamp: NotRequired[str]
    payload: NotRequired[dict[str, Any]]


ClientMessage = Union[SubscribeMessage, AckMessage, PingMessage]  # noqa: UP007 - runtime alias
"""Any message a client may send."""
