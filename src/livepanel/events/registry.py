"""The registry: event type names, their payload classes, and how they change the state.

:func:`event_type` registers a dataclass under a name (and, with
``collection=``, a :class:`StateRule`); :func:`registered_types` and
:func:`state_rules` are read-only views of what is registered;
:func:`prepare_payload` turns a payload of a registered type into what is
published: validated, in its wire form, redacted. The registry starts empty:
the built-in types of :mod:`livepanel.events.builtin` are registered when
that module is imported.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from livepanel.events.redaction import redact_payload
from livepanel.events.validation import from_wire, install_validation, to_wire, wire_name

__all__ = [
    "RESERVED_TYPES",
    "StateRule",
    "event_type",
    "prepare_payload",
    "registered_types",
    "state_rule_of",
    "state_rules",
]

RESERVED_TYPES = frozenset({"welcome", "ping", "pong", "error", "state"})
"""The wire protocol's own frame types, never event types: ``event_type("welcome")`` raises."""

_TYPE_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_REGISTRY: dict[str, type[Any]] = {}

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class StateRule:
    """How events of one type change the state kept for clients (SPEC section 7).

    ``key`` is the wire name of the payload field that identifies an entry
    (``None``: the collection keeps its newest ``keep`` events); ``removes``
    deletes the entry with the event's key.

    Example::

        >>> import livepanel.events.builtin  # the built-in types are opt-in
        >>> state_rules()["session.killed"]
        StateRule(collection='sessions', key='sessionKey', keep=None, removes=True)
    """

    collection: str
    key: str | None = None
    keep: int | None = None
    removes: bool = False


_STATE_RULES: dict[str, StateRule] = {}
_COLLECTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

state_rule_of: Callable[[str], StateRule | None] = _STATE_RULES.get
"""The :class:`StateRule` of an event type, or ``None`` for a type that changes no state:
the registry's own lookup, for the paths that run once per event.

Example: ``state_rule_of("deploy.finished")`` is ``None`` unless that type has a collection.
"""


def state_rules() -> Mapping[str, StateRule]:
    """A read-only view of the event types that change the state, by type name.

    Example::

        >>> import livepanel.events.builtin  # the built-in types are opt-in
        >>> state_rules()["gateway.status"]
        StateRule(collection='gateway', key=None, keep=1, removes=False)
    """
    return types.MappingProxyType(_STATE_RULES)


def _state_rule(
    name: str,
    cls: type[Any],
    collection: str | None,
    key: str | None,
    removes: bool,
    keep: int | None,
) -> StateRule | None:
    """Check ``event_type``'s state arguments against the class and the other types."""
    where = f"event_type({name!r})"
    if collection is None:
        if key is not None or removes or keep is not None:
            raise ValueError(f"{where}: key, removes and keep need collection='<name>'")
        return None
    if not isinstance(collection, str) or not _COLLECTION_NAME.fullmatch(collection):
        raise ValueError(f"{where}: collection must be a wire name like 'sessions'")
    wire_key = None
    if key is not None:
        names = {f.name: wire_name(f.name) for f in dataclasses.fields(cls)}
        if key not in names:
            raise ValueError(
                f"{where}: key={key!r} is not a field of {cls.__name__}; "
                f"expected one of {', '.join(sorted(names))}"
            )
        wire_key = names[key]
        if keep is not None:
            raise ValueError(f"{where}: a keyed collection keeps one entry per key; drop keep=")
    else:
        if removes:
            raise ValueError(f"{where}: removes=True needs key= (which entry to remove)")
        if keep is None:
            raise ValueError(f"{where}: give key='<field>' or keep=<n> for {collection!r}")
    if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
        raise ValueError(f"{where}: keep must be an integer >= 1")
    rule = StateRule(collection, wire_key, keep, bool(removes))
    for other, known in _STATE_RULES.items():
        same = other != name and known.collection == collection
        if same and (known.key, known.keep) != (rule.key, rule.keep):
            raise ValueError(
                f"{where}: collection {collection!r} is declared by {other!r} with "
                f"key={known.key!r}, keep={known.keep!r}; every type of a collection "
                "must agree"
            )
    return rule


def event_type(
    name: str,
    *,
    collection: str | None = None,
    key: str | None = None,
    removes: bool = False,
    keep: int | None = None,
) -> Callable[[type[T]], type[T]]:
    """Register a dataclass as the payload of event type ``name``.

    A plain class is turned into a frozen dataclass first. The class gets a
    ``type`` class attribute holding ``name``; its snake_case fields travel as
    camelCase keys.

    With ``collection``, events of the type update that collection of the
    state every client can ask for on connect (``?state=1``): ``key`` names the
    payload field (its Python name) whose value identifies an entry, and an
    entry is the newest event for its key; ``removes=True`` deletes the entry
    with the event's key; a collection without a key keeps its newest ``keep``
    events (``keep=1``: a singleton). See ``docs/state.md``.

    Example::

        @event_type("deploy.finished", collection="deploys", key="service")
        class DeployFinished:
            service: str
            duration_ms: int

        broadcast_event(DeployFinished(service="api", duration_ms=840))

    Raises:
        ValueError: ``name`` is not dotted words, is one of the protocol's own
            frame types (``welcome``, ``ping``, ``pong``, ``error``, ``state``), or is
            already registered to another class; or the state arguments do not
            fit (``key`` not a field, ``removes`` without ``key``, a collection
            declared differently by another type).
    """
    if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name) or len(name) > 128:
        raise ValueError(f"event type names are dotted words like 'deploy.finished', not {name!r}")
    if name in RESERVED_TYPES:
        raise ValueError(f"{name!r} is a frame type of the wire protocol; pick another name")

    def register(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            cls = dataclasses.dataclass(frozen=True)(cls)
        existing = _REGISTRY.get(name)
        # the same module and name is the same class re-imported (a reload), not a clash
        if existing is not None and _qualified(existing) != _qualified(cls):
            raise ValueError(
                f"event type {name!r} is already registered to {existing.__name__} "
                f"({_qualified(existing)}); {_qualified(cls)} cannot be registered under the "
                "same name: rename one of the two types"
            )
        rule = _state_rule(name, cls, collection, key, removes, keep)
        install_validation(cls)
        cls.type = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        if rule is None:
            _STATE_RULES.pop(name, None)
        else:
            _STATE_RULES[name] = rule
        return cls

    return register


def _qualified(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def registered_types() -> Mapping[str, type[Any]]:
    """A read-only view of the registered event types and their payload classes.

    Example::

        >>> import livepanel.events.builtin  # the built-in types are opt-in
        >>> registered_types()["session.killed"]
        <class 'livepanel.events.builtin.SessionKilled'>
    """
    return types.MappingProxyType(_REGISTRY)


def prepare_payload(kind: str, payload: Any) -> dict[str, Any]:
    """Validate ``payload`` for event type ``kind`` and return its redacted wire form.

    ``payload`` is an instance of the registered dataclass or a mapping with
    the wire's camelCase keys.

    Raises:
        ValueError: the type is not registered, or the payload does not fit it.

    Example::

        >>> from livepanel.events import SessionCreated
        >>> prepare_payload("session.created", SessionCreated("s1", "a1", "cron"))
        {'sessionKey': 's1', 'agentId': 'a1', 'kind': 'cron'}
        >>> prepare_payload("session.killed", {"sessionKey": "s1", "agentId": "a1", "token": "t"})
        Traceback (most recent call last):
          ...
        ValueError: session.killed: unknown field(s) token; expected agentId, sessionKey
    """
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise ValueError(
            f"unregistered event type {kind!r}; register a payload class with "
            f"@event_type({kind!r}) first"
        )
    if payload is None:
        payload = {}
    if isinstance(payload, cls):
        obj = payload  # validated when it was constructed
    elif isinstance(payload, Mapping):
        obj = from_wire(cls, payload, kind)
    else:
        raise ValueError(
            f"the payload of {kind!r} must be a {cls.__name__} or a mapping, "
            f"got {type(payload).__name__}"
        )
    wire = to_wire(obj)
    try:
        # what clients can parse: no NaN or Infinity, and text that encodes as UTF-8
        json.dumps(wire, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{kind}: payload is not JSON-serializable: {exc}") from None
    redacted: dict[str, Any] = redact_payload(wire)
    return redacted
