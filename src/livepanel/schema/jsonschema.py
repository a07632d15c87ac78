"""JSON Schema (2020-12) of every registered event type's payload, as dashboards receive it.

The schema is derived from the payload dataclass's fields and annotations, in
the wire's camelCase, and says what the server really does before an event
leaves the process: the validation of :mod:`livepanel.events.validation`
(types, literals, ``NonNegative``, unknown keys refused) and the redaction of
:mod:`livepanel.events.redaction` (a secret-looking key always carries
``"[redacted]"``; ``stdout``/``stderr`` are cut). Optional fields (with a
default) are optional keys, and one that is ``None`` is left out of the wire.

Example::

    >>> from livepanel.events.builtin import SessionKilled
    >>> schema = event_schemas({"session.killed": SessionKilled})["session.killed"]
    >>> schema["required"], schema["additionalProperties"]
    (['sessionKey', 'agentId'], False)
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from livepanel.events.redaction import REDACTED, SECRET_KEY_WORDS, STREAM_OUTPUT_LIMIT, looks_secret
from livepanel.events.registry import registered_types, state_rule_of
from livepanel.events.validation import NonNegative, wire_name

__all__ = [
    "DIALECT",
    "UnsupportedAnnotation",
    "event_schemas",
    "payload_schema",
    "schema_document",
]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The ``$schema`` of every payload schema: JSON Schema 2020-12."""

_OUTPUT_KEYS = frozenset({"stdout", "stderr"})
_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"


class UnsupportedAnnotation(TypeError):
    """A payload field whose annotation livepanel cannot describe (nor validate).

    The message names the event type's class and the field, and lists what is supported.

    Example::

        >>> @dataclasses.dataclass
        ... class Odd:
        ...     blob: bytes
        >>> payload_schema(Odd)
        Traceback (most recent call last):
          ...
        livepanel.schema.jsonschema.UnsupportedAnnotation: Odd.blob: livepanel cannot ...
    """


_SUPPORTED = (
    "str, int, float, bool, datetime, Literal[...], an Enum of str or int values, "
    "X | None, list[X], tuple[X, ...], dict[str, X], a nested dataclass, "
    "Annotated[X, NonNegative()] or Any"
)


def _secret_key_pattern() -> str:
    """An ECMA-262 regex matching a key :func:`looks_secret` would redact (case and ``_``/``-``
    ignored, the word anywhere in the key)."""

    def letters(word: str) -> str:
        return "[_-]*".join(f"[{c.lower()}{c.upper()}]" for c in word)

    return "|".join(letters(word) for word in SECRET_KEY_WORDS)


_REDACTED_VALUE: dict[str, Any] = {
    "const": REDACTED,
    "description": "a secret-looking key: its value never leaves the server",
}


class _Builder:
    """Turns one payload class (and the dataclasses nested in it) into a schema with ``$defs``."""

    def __init__(self, root: type[Any]) -> None:
        self.root = root
        self.defs: dict[str, dict[str, Any]] = {}
        self.names: dict[type[Any], str] = {}

    def object_schema(self, cls: type[Any]) -> dict[str, Any]:
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as exc:  # a forward reference that does not resolve
            raise UnsupportedAnnotation(
                f"{cls.__name__}: cannot read its annotations ({exc}); define the types it "
                "names at module level"
            ) from None
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in dataclasses.fields(cls):
            wire = wire_name(field.name)
            where = f"{cls.__name__}.{field.name}"
            is_required = (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            )
            hint = hints[field.name]
            if looks_secret(wire):
                self.value(hint, where, wire)  # still refuse what the server cannot validate
                properties[wire] = dict(_REDACTED_VALUE)
            else:
                # an optional field that is None is left out of the wire, never sent as null
                properties[wire] = self.value(
                    _without_none(hint) if not is_required else hint, where, wire
                )
            if is_required:
                required.append(wire)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        doc = _summary(cls)
        if doc:
            schema["description"] = doc
        return schema

    def value(self, hint: Any, where: str, key: str | None) -> dict[str, Any]:
        origin = typing.get_origin(hint)
        if hint is Any:
            return {}
        if origin is Annotated:
            inner, *marks = typing.get_args(hint)
            schema = self.value(inner, where, key)
            if any(isinstance(mark, NonNegative) for mark in marks):
                schema = {**schema, "minimum": 0}
            return schema
        if origin is Union or origin is types.UnionType:
            options = [self.value(arg, where, key) for arg in typing.get_args(hint)]
            return options[0] if len(options) == 1 else {"anyOf": options}
        if origin is Literal:
            values = typing.get_args(hint)
            for value in values:
                if isinstance(value, bool) or not isinstance(value, (str, int)):
                    raise UnsupportedAnnotation(
                        f"{where}: Literal values must be strings or integers, not {value!r}"
                    )
            return {"enum": list(values)}
        if hint is type(None):
            return {"type": "null"}
        if hint is bool:
            return {"type": "boolean"}
        if hint is int:
            return {"type": "integer"}
        if hint is float:
            return {"type": "number"}
        if hint is str:
            if key in _OUTPUT_KEYS:
                return {
                    "type": "string",
                    "maxLength": STREAM_OUTPUT_LIMIT,
                    "description": f"cut to {STREAM_OUTPUT_LIMIT} UTF-8 bytes, a marker included",
                }
            return {"type": "string"}
        if hint is datetime:
            # exactly what format_timestamp writes: UTC, milliseconds, Z
            return {"type": "string", "format": "date-time", "pattern": _TIMESTAMP}
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return self.enum(hint, where)
        if origin is tuple:
            args = typing.get_args(hint)
            if len(args) != 2 or args[1] is not Ellipsis:
                raise UnsupportedAnnotation(
                    f"{where}: only tuple[X, ...] is supported (a list of X on the wire), "
                    f"not {hint!r}"
                )
            return {"type": "array", "items": self.value(args[0], where, key)}
        if origin in (list, Sequence) or hint in (list, tuple):
            args = typing.get_args(hint)
            return {"type": "array", "items": self.value(args[0], where, key) if args else {}}
        if origin in (dict, Mapping) or hint in (dict, Mapping):
            args = typing.get_args(hint)
            if args and args[0] is not str:
                raise UnsupportedAnnotation(f"{where}: dict keys must be str, not {args[0]!r}")
            item = self.value(args[1], where, None) if len(args) == 2 else {}
            return {
                "type": "object",
                "patternProperties": {_secret_key_pattern(): dict(_REDACTED_VALUE)},
                "additionalProperties": item,
            }
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return {"$ref": f"#/$defs/{self.define(hint)}"}
        raise UnsupportedAnnotation(
            f"{where}: livepanel cannot describe (nor validate) fields of type {hint!r}; "
            f"use one of: {_SUPPORTED}"
        )

    def enum(self, cls: type[enum.Enum], where: str) -> dict[str, Any]:
        values = [member.value for member in cls]
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
            raise UnsupportedAnnotation(f"{where}: enum {cls.__name__} must have str or int values")
        return {"enum": values, "title": cls.__name__}

    def define(self, cls: type[Any]) -> str:
        name = self.names.get(cls)
        if name is not None:
            return name
        if cls is self.root:
            raise UnsupportedAnnotation(f"{cls.__name__}: a payload cannot contain itself")
        name = cls.__name__
        n = 2
        while name in self.defs:  # two nested classes of one name from different modules
            name, n = f"{cls.__name__}{n}", n + 1
        self.names[cls] = name
        self.defs[name] = {}  # reserved before recursing: a class that contains itself
        self.defs[name] = {"title": cls.__name__, **self.object_schema(cls)}
        return name


def _without_none(hint: Any) -> Any:
    """``X | None`` without ``None``: what an optional field carries when it is on the wire."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        inner, *marks = typing.get_args(hint)
        rebuilt = (_without_none(inner), *marks)
        return Annotated.__class_getitem__(rebuilt)
    if origin is Union or origin is types.UnionType:
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if not args:
            return hint
        if len(args) == 1:
            return args[0]
        return Union[tuple(args)]  # noqa: UP007 - built from a tuple
    return hint


def _summary(cls: type[Any]) -> str:
    """The first paragraph of the class's own docstring, not dataclass's generated one."""
    doc = cls.__dict__.get("__doc__") or ""
    if not doc or doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(doc.strip().split("\n\n", 1)[0].split()).replace("``", "`")


def payload_schema(cls: type[Any], name: str | None = None) -> dict[str, Any]:
    """The JSON Schema (2020-12) of payload dataclass ``cls`` as it is sent on the wire.

    Args:
        cls: a dataclass (registered or not).
        name: the event type, recorded as the schema's ``x-livepanel-type``.

    Raises:
        UnsupportedAnnotation: a field's annotation is not one livepanel supports; the
            message names the class and the field.

    Example::

        >>> @dataclasses.dataclass
        ... class Deploy:
        ...     service_name: str
        ...     note: str | None = None
        >>> payload_schema(Deploy)["properties"]
        {'serviceName': {'type': 'string'}, 'note': {'type': 'string'}}
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise UnsupportedAnnotation(f"{cls!r} is not a dataclass")
    builder = _Builder(cls)
    body = builder.object_schema(cls)
    schema: dict[str, Any] = {"$schema": DIALECT, "title": cls.__name__, **body}
    if name is not None:
        schema["x-livepanel-type"] = name
        rule = state_rule_of(name)
        if rule is not None:
            schema["x-livepanel-state"] = {
                "collection": rule.collection,
                "key": rule.key,
                "keep": rule.keep,
                "removes": rule.removes,
            }
    if builder.defs:
        schema["$defs"] = builder.defs
    return schema


def event_schemas(registry: Mapping[str, type[Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The payload schema of every registered event type, by type name, sorted by name.

    Args:
        registry: the types to describe (default: every registered type).

    Raises:
        UnsupportedAnnotation: a field of one of the types cannot be described.

    Example::

        >>> from livepanel.events.builtin import AgentStatus
        >>> schemas = event_schemas({"agent.status": AgentStatus})
        >>> schemas["agent.status"]["properties"]["activeSessionCount"]
        {'type': 'integer', 'minimum': 0}
    """
    types_ = registered_types() if registry is None else registry
    return {name: payload_schema(types_[name], name) for name in sorted(types_)}


def schema_document(registry: Mapping[str, type[Any]] | None = None) -> dict[str, Any]:
    """What ``livepanel schema`` prints: ``{"events": {type: JSON Schema of its payload}}``.

    Args:
        registry: the types to describe (default: every registered type).

    Raises:
        UnsupportedAnnotation: a field of one of the types cannot be described.

    Example::

        >>> from livepanel.events.builtin import AgentStatus, CronExecuted
        >>> sorted(schema_document({"cron.executed": CronExecuted, "agent.status": AgentStatus}))
        ['events']
    """
    return {"events": event_schemas(registry)}
