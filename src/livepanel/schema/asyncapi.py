"""``livepanel asyncapi`` and ``LivePanelApp.asyncapi()``: an AsyncAPI 3.0 document of the endpoint.

One channel per transport: WebSocket (every server frame, and the client's
``ping``, ``ack`` and ``subscribe``) and Server-Sent Events (the server's
frames only); every event type's payload from its JSON Schema; the security
schemes (HTTP Basic, connect tickets). Serve it next to an app's OpenAPI.

Example::

    >>> document = asyncapi_document(url="wss://panel.example.com/ws", events={})
    >>> document["asyncapi"], document["servers"]["websocket"]["host"]
    ('3.0.0', 'panel.example.com')
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from livepanel.__about__ import __version__
from livepanel.schema.jsonschema import schema_document

__all__ = ["SECURITY_SCHEMES", "asyncapi_document"]

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "HTTP Basic credentials on the handshake (BasicAuth).",
    },
    "ticket": {
        "type": "httpApiKey",
        "name": "ticket",
        "in": "query",
        "description": "A signed, single-use connect ticket from the app's REST endpoint "
        "(TicketAuth), as ?ticket=.",
    },
}
"""The security schemes named in ``asyncapi_document(security=...)``."""

_TIMESTAMP = {
    "type": "string",
    "format": "date-time",
    "description": "ISO 8601 UTC with milliseconds and Z",
}
_ERROR_CODES = [
    "invalid_json",
    "invalid_message",
    "unknown_type",
    "rate_limited",
    "resume_unavailable",
]


def _frame(kind: Any, payload: Mapping[str, Any], *, event_id: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"type": kind, "timestamp": _TIMESTAMP, "payload": payload}
    required = ["type", "timestamp", "payload"]
    if event_id:
        properties["id"] = {"type": "string", "description": "opaque, usable as since"}
        required.append("id")
    return {"type": "object", "properties": properties, "required": required}


def _object(properties: Mapping[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    return schema


_STRING = {"type": "string"}
_CONTROL_FRAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "welcome": (
        "The first frame of every connection.",
        _object(
            {
                "connectionId": _STRING,
                "heartbeatInterval": {"type": "number", "minimum": 0},
                "lastEventId": _STRING,
                "server": _STRING,
                "schema": {
                    "type": "string",
                    "description": "the fingerprint of the registered event types",
                },
            },
            ["connectionId", "heartbeatInterval", "lastEventId", "server"],
        ),
    ),
    "ping": ("The server's heartbeat after a heartbeat interval of silence.", _object({})),
    "pong": ("The answer to a client's ping: its payload, echoed.", {"type": "object"}),
    "error": (
        "A refused client message, or a since that cannot be resumed.",
        _object({"code": {"enum": _ERROR_CODES}, "message": _STRING}, ["code", "message"]),
    ),
    "state": (
        "The state on connect (?state=1): the fold of the stream up to lastEventId.",
        _object(
            {
                "lastEventId": _STRING,
                "collections": {
                    "type": "object",
                    "additionalProperties": _object(
                        {
                            "key": {"type": ["string", "null"]},
                            "keep": {"type": ["integer", "null"]},
                            "entries": {"type": "array", "items": {"type": "object"}},
                        },
                        ["key", "keep", "entries"],
                    ),
                },
                "types": {
                    "type": "object",
                    "additionalProperties": _object(
                        {"collection": _STRING, "removes": {"type": "boolean"}},
                        ["collection", "removes"],
                    ),
                },
            },
            ["lastEventId", "collections", "types"],
        ),
    ),
}
_CLIENT_MESSAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "clientPing": ("Asks for a pong at once; the payload is echoed.", {"type": "object"}),
    "ack": (
        "The last event the client has processed.",
        _object({"id": _STRING}, ["id"]),
    ),
    "subscribe": (
        "Replaces the type filter; replays after since; asks for the state.",
        _object(
            {
                "types": {"type": "array", "items": _STRING},
                "since": _STRING,
                "state": {"type": "boolean"},
            }
        ),
    ),
}


def _client_frame(kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"type": {"const": kind}, "timestamp": _TIMESTAMP, "payload": payload},
        "required": ["type"],
    }


def _ref(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)}


def _message_name(event_type: str) -> str:
    return "event." + event_type


def _payload_schemas(events: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each event's payload schema, its ``$defs`` moved to ``components/schemas``."""
    payloads: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    for name, schema in events.items():
        schema = copy.deepcopy(dict(schema))
        schema.pop("$schema", None)
        renames: dict[str, str] = {}
        for def_name, sub in (schema.pop("$defs", None) or {}).items():
            target = def_name
            n = 2
            while target in shared and shared[target] != sub:
                target, n = f"{def_name}{n}", n + 1
            shared[target] = sub
            renames[def_name] = target
        payloads[name] = _rewrite_refs(schema, renames)
    for key, sub in list(shared.items()):
        shared[key] = _rewrite_refs(sub, {k: k for k in shared})
    return payloads, shared


def _rewrite_refs(schema: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                name = value.removeprefix("#/$defs/")
                out[key] = f"#/components/schemas/{renames.get(name, name)}"
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(schema, list):
        return [_rewrite_refs(v, renames) for v in schema]
    return schema


def asyncapi_document(
    *,
    url: str = "ws://localhost:8000/ws",
    security: Sequence[str] = ("basic", "ticket"),
    heartbeat_interval: float = 25.0,
    title: str = "livepanel",
    events: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of a livepanel endpoint, as JSON-ready dicts.

    Args:
        url: where the endpoint is served (``ws://``/``wss://``; the SSE variant is the same
            path over ``http``/``https``).
        security: the names in :data:`SECURITY_SCHEMES` the endpoint accepts, any of which
            will do; empty for an anonymous endpoint.
        heartbeat_interval: seconds of silence before the server's ``ping``.
        title: the document's ``info.title``.
        events: ``{type: schema}`` (default: every registered type's).

    Raises:
        ValueError: ``url`` is not ``ws://`` or ``wss://``, or a security name is unknown.
        UnsupportedAnnotation: a registered type cannot be described.

    Example::

        document = app.asyncapi()  # LivePanelApp, with its auth and heartbeat
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"asyncapi: url must be ws://host/path or wss://host/path, not {url!r}")
    unknown = [name for name in security if name not in SECURITY_SCHEMES]
    if unknown:
        raise ValueError(
            f"asyncapi: unknown security scheme(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(SECURITY_SCHEMES)}"
        )
    if events is None:
        events = schema_document()["events"]
    payloads, shared = _payload_schemas(events)
    pathname = parts.path or "/"
    server_security = [_ref("components", "securitySchemes", name) for name in security]

    messages: dict[str, Any] = {}
    for name, (summary, payload) in _CONTROL_FRAMES.items():
        messages[name] = {
            "name": name,
            "summary": summary,
            "payload": _frame({"const": name}, payload),
        }
    for name in sorted(payloads):
        schema = payloads[name]
        messages[_message_name(name)] = {
            "name": name,
            "title": str(schema.get("title", name)),
            "summary": str(schema.get("description") or f"The event type {name}."),
            "payload": _frame({"const": name}, schema, event_id=True),
        }
    messages["batch"] = {
        "name": "batch",
        "summary": "With ?batch=1: several server frames in one text frame, newline-delimited.",
        "contentType": "application/x-ndjson",
        "payload": {"type": "string", "description": "server frames, one JSON object a line"},
    }
    for name, (summary, payload) in _CLIENT_MESSAGES.items():
        kind = "ping" if name == "clientPing" else name
        messages[name] = {"name": kind, "summary": summary, "payload": _client_frame(kind, payload)}

    server_frames = [*_CONTROL_FRAMES, *(_message_name(n) for n in sorted(payloads))]
    query = {
        "type": "object",
        "properties": {
            "types": {"type": "string", "description": "comma-separated type globs"},
            "since": {"type": "string", "description": "resume after this event id"},
            "state": {"type": "string", "enum": ["1"], "description": "send a state frame"},
            "batch": {"type": "string", "enum": ["1"], "description": "newline-delimited"},
            "ticket": {"type": "string", "description": "a connect ticket (TicketAuth)"},
        },
    }
    channels = {
        "websocket": {
            "address": pathname,
            "title": "WebSocket",
            "servers": [_ref("servers", "websocket")],
            "messages": {
                name: _ref("components", "messages", name)
                for name in [*server_frames, "batch", *_CLIENT_MESSAGES]
            },
            "bindings": {"ws": {"method": "GET", "query": query}},
        },
        "eventStream": {
            "address": pathname,
            "title": "Server-Sent Events",
            "description": "GET with Accept: text/event-stream; each frame is one SSE message "
            "(event: type, id: event id, data: the frame's JSON); Last-Event-ID resumes.",
            "servers": [_ref("servers", "eventStream")],
            "messages": {name: _ref("components", "messages", name) for name in server_frames},
        },
    }

    def operation(action: str, channel: str, names: Sequence[str], summary: str) -> dict[str, Any]:
        return {
            "action": action,
            "summary": summary,
            "channel": _ref("channels", channel),
            "messages": [_ref("channels", channel, "messages", n) for n in names],
        }

    operations = {
        "receiveFrames": operation(
            "receive",
            "websocket",
            [*server_frames, "batch"],
            "What the server sends: welcome first, then events and control frames.",
        ),
        "sendClientMessages": operation(
            "send", "websocket", list(_CLIENT_MESSAGES), "What a client may send."
        ),
        "receiveEventStream": operation(
            "receive", "eventStream", server_frames, "The same frames as Server-Sent Events."
        ),
    }
    secure = parts.scheme == "wss"
    servers = {
        "websocket": {
            "host": parts.netloc,
            "pathname": pathname,
            "protocol": parts.scheme,
            "description": f"WebSocket, JSON text frames; a ping after {heartbeat_interval:g} s "
            "of silence.",
            "security": server_security,
        },
        "eventStream": {
            "host": parts.netloc,
            "pathname": pathname,
            "protocol": "https" if secure else "http",
            "description": "Server-Sent Events on the same path (Accept: text/event-stream).",
            "security": copy.deepcopy(server_security),
        },
    }
    components: dict[str, Any] = {
        "messages": messages,
        "securitySchemes": {name: SECURITY_SCHEMES[name] for name in security},
    }
    if shared:
        components["schemas"] = shared
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": __version__,
            "description": "Typed real-time events from a livepanel endpoint (livepanel "
            f"{__version__}).",
        },
        "defaultContentType": "application/json",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": components,
    }
