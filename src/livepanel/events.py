"""Typed events: the envelope, the payload registry and the built-in ClawPanel types.

A payload type is a dataclass registered under an event type name with
:func:`event_type`. Its fields are snake_case in Python and camelCase on the
wire. Publishing validates the payload against the dataclass, turns it into its
wire form, redacts secret-looking values and cuts long command output, so what
reaches a client is always well-formed and safe to show.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

__all__ = [
    "REDACTED",
    "RESERVED_TYPES",
    "SECRET_KEY_WORDS",
    "SECRET_PATTERNS",
    "STREAM_OUTPUT_LIMIT",
    "AgentStatus",
    "CronExecuted",
    "Event",
    "GatewayStatus",
    "NonNegative",
    "SessionCreated",
    "SessionKilled",
    "StateRule",
    "add_secret_pattern",
    "audience_of",
    "event_type",
    "format_timestamp",
    "parse_timestamp",
    "prepare_payload",
    "registered_types",
    "state_rules",
]

REDACTED = "[redacted]"
"""What a secret-looking value becomes: ``{"apiKey": "sk-1"}`` is sent as ``{"apiKey": REDACTED}``.

A value is secret-looking when its key, lowercased with ``_`` and ``-``
removed, contains one of :data:`SECRET_KEY_WORDS`. Inside every other string
value, the token shapes of :data:`SECRET_PATTERNS` (and those added with
:func:`add_secret_pattern`) are replaced by it too.
"""
SECRET_KEY_WORDS = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "credential",
    "cookie",
    "authorization",
)
"""Key words whose values are redacted whole: ``{"db_passwd": "x"}`` is sent as ``{"db_passwd":
"[redacted]"}`` (``credential`` covers ``credentials``, ``privatekey`` covers ``private_key``)."""


def _token(prefix: str, body: str) -> str:
    """A token that starts a word, written literal first so the regex engine can skip ahead."""
    return f"{prefix}(?<![A-Za-z0-9_-]{prefix}){body}"


SECRET_PATTERNS: tuple[str, ...] = (
    _token("sk-", r"[A-Za-z0-9_-]{20,}"),
    *(_token(f"gh{kind}_", r"[A-Za-z0-9]{30,}") for kind in "oprsu"),
    _token("github_pat_", r"[A-Za-z0-9_]{22,}"),
    *(_token(f"xox{kind}-", r"[A-Za-z0-9-]{10,}") for kind in "abeprs"),
    *(_token(prefix, r"[A-Z0-9]{16}(?![A-Za-z0-9])") for prefix in ("AKIA", "ASIA")),
    _token("eyJ", r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    *(
        _token(word, r"[ \t]+(?P<secret>[A-Za-z0-9._~+/=-]{8,})")
        for word in ("Bearer", "bearer", "BEARER")
    ),
    r"://[^\s/:@]*:(?P<secret>[^\s/@]+)@",
)
"""Token shapes redacted inside string values, on by default, in this order: API keys
``sk-…`` (OpenAI and alike, 20+ characters after ``sk-``); GitHub tokens ``ghp_…``,
``gho_…``, ``ghs_…``, ``ghu_…``, ``ghr_…`` and ``github_pat_…``; Slack tokens ``xoxb-…``,
``xoxp-…``, ``xoxa-…``, ``xoxs-…`` and alike; AWS access key ids ``AKIA…``/``ASIA…``; JSON Web
Tokens ``eyJ….….…``; the credentials after ``Bearer`` (or ``bearer``, ``BEARER``); and the
password of a URL ``scheme://user:password@host`` (user and ``@`` kept). Each starts with a
literal, and a token must start a word (``mask-…`` is not an ``sk-`` key), which keeps the
scan of a string one pass.

A group named ``secret`` marks the part replaced; without it the whole match is. Example:
``"curl -H 'Authorization: Bearer abcdef123456' https://u:hunter2@example.com"`` is sent as
``"curl -H 'Authorization: Bearer [redacted]' https://u:[redacted]@example.com"``.
"""
STREAM_OUTPUT_LIMIT = 65536
"""Most UTF-8 bytes kept of ``stdout`` / ``stderr``, truncation marker included."""
RESERVED_TYPES = frozenset({"welcome", "ping", "pong", "error", "state"})
"""The wire protocol's own frame types, never event types: ``event_type("welcome")`` raises."""

_OUTPUT_KEYS = frozenset({"stdout", "stderr"})
_TYPE_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")

T = TypeVar("T")


class NonNegative:
    """Marker for ``Annotated[int, NonNegative()]``: the value must be ``>= 0``.

    Example::

        @event_type("deploy.finished")
        class DeployFinished:
            duration_ms: Annotated[int, NonNegative()]
    """

    def __repr__(self) -> str:
        return "NonNegative()"


# --------------------------------------------------------------------------- time


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``, the wire's form; naive means UTC.

    Example::

        >>> format_timestamp(datetime(2026, 2, 21, 10, 0, 0, 123456))
        '2026-02-21T10:00:00.123Z'
    """
    # isoformat, unlike strftime("%Y"), zero-pads years before 1000
    return _as_utc(value).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO 8601 date-time; a trailing ``Z`` means UTC, no offset means UTC.

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
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 date-time, got {value!r}") from None
    return _as_utc(parsed)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01 at +02:00 falls before year 1 in UTC
        raise ValueError(f"{value.isoformat()} is out of range in UTC") from None


def _now() -> datetime:
    return _truncate_ms(datetime.now(timezone.utc))


def _truncate_ms(value: datetime) -> datetime:
    value = _as_utc(value)
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

    def to_dict(self) -> dict[str, Any]:
        """The wire object: ``type``, ``timestamp``, ``payload`` and ``id`` when set."""
        data: dict[str, Any] = {
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
        data = self.to_dict()
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


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Any]] = {}
_FIELDS: dict[type[Any], tuple[_Field, ...]] = {}


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    wire: str
    hint: Any
    required: bool


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclasses.dataclass(frozen=True)
class StateRule:
    """How events of one type change the state kept for clients (SPEC section 7).

    ``key`` is the wire name of the payload field that identifies an entry
    (``None``: the collection keeps its newest ``keep`` events); ``removes``
    deletes the entry with the event's key.

    Example::

        >>> state_rules()["session.killed"]
        StateRule(collection='sessions', key='sessionKey', keep=None, removes=True)
    """

    collection: str
    key: str | None = None
    keep: int | None = None
    removes: bool = False


_STATE_RULES: dict[str, StateRule] = {}
_COLLECTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def state_rules() -> Mapping[str, StateRule]:
    """A read-only view of the event types that change the state, by type name.

    Example::

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
        names = {f.name: _camel(f.name) for f in dataclasses.fields(cls)}
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
        if existing is not None and (existing.__module__, existing.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise ValueError(f"event type {name!r} is already registered to {existing.__name__}")
        rule = _state_rule(name, cls, collection, key, removes, keep)
        _FIELDS.pop(cls, None)
        _install_validation(cls)
        cls.type = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        if rule is None:
            _STATE_RULES.pop(name, None)
        else:
            _STATE_RULES[name] = rule
        return cls

    return register


def _install_validation(cls: type[Any]) -> None:
    """Make construction validate and normalise the fields (wrapping any __post_init__)."""
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self: Any, *args: Any) -> None:
        _validate_instance(self, cls.__name__)
        if own is not None:
            own(self, *args)

    cls.__post_init__ = __post_init__
    if not getattr(cls, "__livepanel_wrapped__", False):
        init = cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            __post_init__(self)

        # dataclass-generated __init__ only calls __post_init__ if it existed at creation
        if "__post_init__" not in init.__code__.co_names:
            cls.__init__ = __init__
        cls.__livepanel_wrapped__ = True


def registered_types() -> Mapping[str, type[Any]]:
    """A read-only view of the registered event types and their payload classes.

    Example::

        >>> registered_types()["session.killed"]
        <class 'livepanel.events.SessionKilled'>
    """
    return types.MappingProxyType(_REGISTRY)


# --------------------------------------------------------------------------- validation


def _check(value: Any, hint: Any, path: str) -> Any:
    """Check ``value`` against ``hint``; return it converted to its Python form."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin is Annotated:
        inner, *marks = typing.get_args(hint)
        value = _check(value, inner, path)
        for mark in marks:
            if isinstance(mark, NonNegative) and value < 0:
                raise ValueError(f"{path} must be >= 0, got {value!r}")
        return value
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, path)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else f"{path}: {'; '.join(errors)}")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed or isinstance(value, bool):
            choices = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"{path} must be one of {choices}, got {value!r}")
        return value
    if hint is type(None):
        if value is not None:
            raise ValueError(f"{path} must be null")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path} must be a boolean, got {type(value).__name__}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{path} must be an integer, got {type(value).__name__}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{path} must be a number, got {type(value).__name__}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{path} must be a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{path} must be a string, got {type(value).__name__}")
        return value
    if hint is datetime:
        if isinstance(value, datetime):
            try:
                return _as_utc(value)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        if isinstance(value, str):
            try:
                return parse_timestamp(value)
            except ValueError:
                raise ValueError(f"{path} must be an ISO 8601 date-time, got {value!r}") from None
        raise ValueError(f"{path} must be a datetime or an ISO 8601 string")
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path} must be a list, got {type(value).__name__}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return [_check(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{path} must be an object, got {type(value).__name__}")
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path} keys must be strings")
            out[key] = _check(v, item, f"{path}.{key}")
        return out
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            _validate_instance(value, path)
            return value
        if isinstance(value, Mapping):
            return _from_mapping(hint, value, path)
        raise ValueError(f"{path} must be an object")
    raise TypeError(f"{path}: livepanel cannot validate fields of type {hint!r}")


def _fields_of(cls: type[Any]) -> tuple[_Field, ...]:
    cached = _FIELDS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        cached = tuple(
            _Field(
                f.name,
                _camel(f.name),
                hints[f.name],
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        )
        _FIELDS[cls] = cached
    return cached


def _from_mapping(cls: type[T], data: Mapping[str, Any], path: str) -> T:
    fields = _fields_of(cls)
    known = {f.wire for f in fields}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        expected = ", ".join(sorted(known))
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}; expected {expected}")
    kwargs = {}
    for f in fields:
        if f.wire in data:
            kwargs[f.name] = data[f.wire]
        elif f.required:
            raise ValueError(f"{path}: missing required field {f.wire!r}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a custom __init__ refusing the arguments
        raise ValueError(f"{path}: {exc}") from None


def _validate_instance(obj: Any, path: str) -> None:
    for f in _fields_of(type(obj)):
        value = getattr(obj, f.name)
        converted = _check(value, f.hint, f"{path}.{f.wire}")
        if converted is not value:
            object.__setattr__(obj, f.name, converted)


def _to_wire(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in _fields_of(type(value)):
            v = getattr(value, f.name)
            if v is None and not f.required:
                continue
            out[f.wire] = _to_wire(v)
        return out
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Mapping):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_wire(v) for v in value]
    return value


# --------------------------------------------------------------------------- redaction


def _looks_secret(key: str) -> bool:
    folded = key.lower().replace("_", "").replace("-", "")
    return any(word in folded for word in SECRET_KEY_WORDS)


class _Scrubber:
    """Every secret pattern in one compiled regex, so a string is scanned once."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self.each = [re.compile(p) for p in self.patterns]  # to tell which one matched
        # alternatives left bare (no wrapping group) so that, when each starts with a
        # literal, the engine jumps from one candidate character to the next
        parts = [p.replace("(?P<secret>", f"(?P<s{n}>") for n, p in enumerate(self.patterns)]
        self.regex = re.compile("|".join(parts))

    def scrub(self, text: str) -> str:
        return self.regex.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        start, end = match.span()
        for n, pattern in enumerate(self.each):
            if pattern.match(match.string, start) is None:
                continue
            if "secret" not in pattern.groupindex or match.start(f"s{n}") < 0:
                return REDACTED
            inner_start, inner_end = match.span(f"s{n}")
            text = match.string
            return text[start:inner_start] + REDACTED + text[inner_end:end]
        return REDACTED


_scrubber = _Scrubber(SECRET_PATTERNS)


def add_secret_pattern(pattern: str) -> None:
    """Redact one more token shape inside string values, from now on, in this process.

    ``pattern`` is a regular expression; a match is replaced by
    :data:`REDACTED`, or only its group named ``secret`` when it has one.
    Other groups should not be named. It runs on every string of every
    published payload, so keep it linear-time: no nested quantifiers such as
    ``(a+)+``, and start it with something specific (a literal prefix, a
    lookbehind like ``(?<![A-Za-z0-9_-])``).

    Raises:
        ValueError: ``pattern`` does not compile, or matches the empty string.

    Example::

        >>> add_secret_pattern(r"(?<![A-Za-z0-9_])lp_live_[A-Za-z0-9]{24}")
        >>> prepare_payload("session.created", {
        ...     "sessionKey": "s1", "agentId": "a1", "kind": "direct",
        ...     "label": "key lp_live_0123456789abcdefghijklmn"})["label"]
        'key [redacted]'
    """
    global _scrubber
    try:
        compiled = re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise ValueError(
            f"add_secret_pattern: {pattern!r} is not a regular expression: {exc}"
        ) from None
    if compiled.fullmatch(""):
        raise ValueError(f"add_secret_pattern: {pattern!r} matches the empty string")
    if pattern not in _scrubber.patterns:
        _scrubber = _Scrubber((*_scrubber.patterns, pattern))


def _scrub(text: str) -> str:
    return _scrubber.scrub(text)


def _cut_output(text: str) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= STREAM_OUTPUT_LIMIT:
        return text
    marker = f"\n[truncated {len(encoded)} bytes to {STREAM_OUTPUT_LIMIT}]"
    keep = STREAM_OUTPUT_LIMIT - len(marker.encode("utf-8"))
    return encoded[:keep].decode("utf-8", errors="ignore") + marker


def _sanitize(value: Any, key: str | None = None) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            k = str(k)
            out[k] = REDACTED if _looks_secret(k) else _sanitize(v, k)
        return out
    if isinstance(value, list):
        return [_sanitize(v, key) for v in value]
    if isinstance(value, str):
        if key in _OUTPUT_KEYS:  # cut first: scanning costs at most the limit, then cut again
            return _cut_output(_scrub(_cut_output(value)))
        return _scrub(value)
    return value


def prepare_payload(kind: str, payload: Any) -> dict[str, Any]:
    """Validate ``payload`` for event type ``kind`` and return its redacted wire form.

    ``payload`` is an instance of the registered dataclass or a mapping with
    the wire's camelCase keys.

    Raises:
        ValueError: the type is not registered, or the payload does not fit it.

    Example::

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
        obj = _from_mapping(cls, payload, kind)
    else:
        raise ValueError(
            f"the payload of {kind!r} must be a {cls.__name__} or a mapping, "
            f"got {type(payload).__name__}"
        )
    wire = _to_wire(obj)
    try:
        # what clients can parse: no NaN or Infinity, and text that encodes as UTF-8
        json.dumps(wire, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{kind}: payload is not JSON-serializable: {exc}") from None
    sanitized: dict[str, Any] = _sanitize(wire)
    return sanitized


# --------------------------------------------------------------------------- built-ins

NonNegativeInt = Annotated[int, NonNegative()]
NonNegativeFloat = Annotated[float, NonNegative()]


@event_type("session.created", collection="sessions", key="session_key")
@dataclasses.dataclass(frozen=True)
class SessionCreated:
    """A session was spawned: event type ``session.created``.

    Example::

        broadcast_event(SessionCreated(session_key="s1", agent_id="a1", kind="direct"))
    """

    type: ClassVar[str]
    session_key: str
    agent_id: str
    kind: Literal["direct", "cron", "subagent"]
    label: str | None = None


@event_type("session.killed", collection="sessions", key="session_key", removes=True)
@dataclasses.dataclass(frozen=True)
class SessionKilled:
    """A session ended: event type ``session.killed``.

    Example::

        broadcast_event(SessionKilled(session_key="s1", agent_id="a1"))
    """

    type: ClassVar[str]
    session_key: str
    agent_id: str


@event_type("agent.status", collection="agents", key="agent_id")
@dataclasses.dataclass(frozen=True)
class AgentStatus:
    """An agent's state: event type ``agent.status``.

    ``last_activity`` takes a ``datetime`` or an ISO 8601 string.

    Example::

        >>> status = AgentStatus("a1", "running", 2, last_activity="2026-02-21T10:00:00Z")
        >>> status.last_activity
        datetime.datetime(2026, 2, 21, 10, 0, tzinfo=datetime.timezone.utc)
    """

    type: ClassVar[str]
    agent_id: str
    status: Literal["running", "idle", "error"]
    active_session_count: NonNegativeInt
    last_activity: datetime | None = None


@event_type("cron.executed", collection="cronRuns", keep=20)
@dataclasses.dataclass(frozen=True)
class CronExecuted:
    """A cron job ran: event type ``cron.executed``.

    ``stdout`` and ``stderr`` are cut to :data:`STREAM_OUTPUT_LIMIT` bytes when published.

    Example::

        broadcast_event(CronExecuted("backup", "tar czf db.tgz", exit_code=0, duration_ms=812))
    """

    type: ClassVar[str]
    job_id: str
    command: str
    exit_code: int
    duration_ms: NonNegativeInt
    stdout: str | None = None
    stderr: str | None = None


@event_type("gateway.status", collection="gateway", keep=1)
@dataclasses.dataclass(frozen=True)
class GatewayStatus:
    """The agent gateway's state: event type ``gateway.status``.

    ``uptime`` is seconds as a float; an int is accepted.

    Example::

        >>> GatewayStatus("running", "1.4.2", uptime=3600)
        GatewayStatus(status='running', version='1.4.2', uptime=3600.0)
    """

    type: ClassVar[str]
    status: Literal["running", "stopped", "error"]
    version: str
    uptime: NonNegativeFloat
