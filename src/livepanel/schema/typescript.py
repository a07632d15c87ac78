"""``livepanel typescript``: a TypeScript module of the event types, from their JSON Schemas.

The module exports one interface per payload, ``EventPayloads`` (each type
string to its payload interface), ``LivePanelEvents`` (the union of
``{type, id, timestamp, payload}`` discriminated by ``type``), the state
collections typed by their entries (``LivePanelCollections``) and
``SCHEMA_FINGERPRINT``, the fingerprint it was made from. ``livepanel.js``'s
client and the React hooks are generic over ``EventPayloads``. Generated from
the same schemas as ``livepanel schema``, so the two cannot disagree.

Example::

    >>> from livepanel.events.builtin import SessionKilled
    >>> module = typescript_module(schema_document({"session.killed": SessionKilled}))
    >>> "  sessionKey: string;" in module
    True
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from livepanel.schema.fingerprint import fingerprint
from livepanel.schema.jsonschema import schema_document

__all__ = ["typescript_module"]

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_RESERVED = frozenset(
    {"EventPayloads", "EventType", "LivePanelEvents", "TypedEvent", "LivePanelCollections"}
)


def _key(name: str) -> str:
    return name if _IDENTIFIER.fullmatch(name) else json.dumps(name)


def _comment(text: str | None, indent: str = "") -> list[str]:
    if not text:
        return []
    safe = text.replace("*/", "* /")
    return [f"{indent}/** {safe} */"]


class _Writer:
    def __init__(self) -> None:
        self.names: set[str] = set(_RESERVED)
        self.blocks: list[str] = []
        self.defined: dict[str, str] = {}  # JSON of a nested schema -> its interface name

    def unique(self, wanted: str) -> str:
        name = wanted if _IDENTIFIER.fullmatch(wanted) else "Payload"
        n = 2
        while name in self.names:
            name, n = f"{wanted}{n}", n + 1
        self.names.add(name)
        return name

    def interface(self, name: str, schema: Mapping[str, Any], refs: Mapping[str, str]) -> None:
        lines = [*_comment(schema.get("description")), f"export interface {name} {{"]
        required = set(schema.get("required") or ())
        for prop, sub in (schema.get("properties") or {}).items():
            lines += _comment(sub.get("description"), "  ")
            optional = "" if prop in required else "?"
            lines.append(f"  {_key(prop)}{optional}: {self.type(sub, refs)};")
        lines.append("}")
        self.blocks.append("\n".join(lines))

    def type(self, schema: Mapping[str, Any], refs: Mapping[str, str]) -> str:
        if "$ref" in schema:
            return refs[str(schema["$ref"]).removeprefix("#/$defs/")]
        if "const" in schema:
            return json.dumps(schema["const"])
        if "enum" in schema:
            return " | ".join(json.dumps(v) for v in schema["enum"]) or "never"
        if "anyOf" in schema:
            return " | ".join(self.type(s, refs) for s in schema["anyOf"])
        kind = schema.get("type")
        if kind == "string":
            return "string"
        if kind in ("integer", "number"):
            return "number"
        if kind == "boolean":
            return "boolean"
        if kind == "null":
            return "null"
        if kind == "array":
            return f"Array<{self.type(schema.get('items') or {}, refs)}>"
        if kind == "object":
            extra = schema.get("additionalProperties")
            item = self.type(extra, refs) if isinstance(extra, Mapping) else "unknown"
            return f"Record<string, {item}>"
        return "unknown"

    def nested(self, owner: str, defs: Mapping[str, Any]) -> dict[str, str]:
        """Interfaces for a payload's ``$defs``; one per distinct schema across payloads."""
        refs: dict[str, str] = {}
        for def_name, sub in defs.items():
            known = self.defined.get(json.dumps(sub, sort_keys=True))
            if known is not None:
                refs[def_name] = known
                continue
            wanted = def_name if def_name not in self.names else f"{owner}{def_name}"
            refs[def_name] = self.unique(wanted)
            self.defined[json.dumps(sub, sort_keys=True)] = refs[def_name]
        for def_name, sub in defs.items():
            name = refs[def_name]
            if not any(block.startswith(f"export interface {name} ") for block in self.blocks):
                self.interface(name, sub, refs)
        return refs


def typescript_module(document: Mapping[str, Any] | None = None) -> str:
    """The TypeScript module of a schema document (default: the registered types').

    Args:
        document: ``{"events": {type: schema}}``, as ``livepanel schema`` prints it.

    Raises:
        UnsupportedAnnotation: without ``document``, a registered type cannot be described.

    Example::

        >>> module = typescript_module({"events": {}})
        >>> "export type LivePanelEvents" in module
        True
    """
    if document is None:
        document = schema_document()
    events: Mapping[str, Any] = document["events"]
    writer = _Writer()
    payloads: dict[str, str] = {}
    for name in sorted(events):
        schema = events[name]
        title = str(schema.get("title") or "Event")
        payloads[name] = writer.unique(f"{title}Payload")
    for name in sorted(events):
        schema = events[name]
        refs = writer.nested(payloads[name].removesuffix("Payload"), schema.get("$defs") or {})
        writer.interface(payloads[name], schema, refs)

    out = [
        "// Generated by `livepanel typescript` from the event types registered in Python.",
        "// Do not edit: generate it again after changing an event type.",
        "/* eslint-disable */",
        "",
        "/** The fingerprint of the schemas this module was made from (`welcome.schema`). */",
        f"export const SCHEMA_FINGERPRINT = {json.dumps(fingerprint(document))};",
        "",
        *(block + "\n" for block in writer.blocks),
        "/** Each event type's payload, by type string. */",
        "export interface EventPayloads {",
        *(f"  {json.dumps(name)}: {payloads[name]};" for name in sorted(events)),
        "}",
        "",
        "export type EventType = keyof EventPayloads;",
        "",
        "/** A broadcast event of one type, as the server sends it. */",
        "export interface TypedEvent<K extends EventType = EventType> {",
        "  type: K;",
        "  id: string;",
        "  timestamp: string;",
        "  payload: EventPayloads[K];",
        "}",
        "",
        "/** Every event this server sends, discriminated by `type`. */",
        "export type LivePanelEvents = { [K in EventType]: TypedEvent<K> }[EventType];",
        "",
        "/** Every event type, in the order `livepanel schema` lists them. */",
        "export const EVENT_TYPES: readonly EventType[] = [",
        *(f"  {json.dumps(name)}," for name in sorted(events)),
        "];",
        "",
        *_collections(events, writer),
    ]
    return "\n".join(out) + "\n"


def _collections(events: Mapping[str, Any], writer: _Writer) -> list[str]:
    """``LivePanelCollections``: each state collection as the client keeps it, a ``Map``
    from the entry's key (the event id for a collection without a key) to the event."""
    entries: dict[str, list[str]] = {}
    keys: dict[str, str] = {}
    for name in sorted(events):
        rule = events[name].get("x-livepanel-state")
        if not isinstance(rule, Mapping):
            continue
        collection = str(rule["collection"])
        entries.setdefault(collection, [])
        if not rule.get("removes"):
            entries[collection].append(name)
        key = rule.get("key")
        if collection not in keys:
            prop = (events[name].get("properties") or {}).get(key) if key else None
            keys[collection] = writer.type(prop, {}) if isinstance(prop, Mapping) else "string"
    lines = ["/** The state collections, as `client.state` keeps them. */"]
    lines.append("export interface LivePanelCollections {")
    for collection in sorted(entries):
        kinds = " | ".join(json.dumps(n) for n in entries[collection]) or "never"
        lines.append(f"  {_key(collection)}: Map<{keys[collection]}, TypedEvent<{kinds}>>;")
    lines.append("}")
    return lines
