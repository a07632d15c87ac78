"""Payload validation: a registered dataclass's fields checked, converted, and put on the wire.

A payload class validates on construction (:func:`install_validation` wraps
its ``__init__``), so a mistake fails where it is made; a mapping with the
wire's camelCase keys becomes an instance through :func:`from_wire`; an
instance becomes its wire form through :func:`to_wire`. The field types
understood are listed in ``docs/concepts.md``.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar, Union

from livepanel.events.envelope import as_utc, format_timestamp, parse_timestamp

__all__ = ["NonNegative", "from_wire", "install_validation", "to_wire", "wire_name"]

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


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    wire: str
    hint: Any
    required: bool


_FIELDS: dict[type[Any], tuple[_Field, ...]] = {}


def wire_name(name: str) -> str:
    """The wire's camelCase name of a snake_case field.

    Example::

        >>> wire_name("active_session_count")
        'activeSessionCount'
    """
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


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
                return as_utc(value)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        if isinstance(value, str):
            try:
                return parse_timestamp(value)
            except ValueError:
                raise ValueError(f"{path} must be an ISO 8601 date-time, got {value!r}") from None
        raise ValueError(f"{path} must be a datetime or an ISO 8601 string")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value
        try:
            if isinstance(value, bool):
                raise ValueError
            return hint(value)
        except (ValueError, TypeError):
            choices = ", ".join(repr(m.value) for m in hint)
            raise ValueError(f"{path} must be one of {choices}, got {value!r}") from None
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
            nested = from_wire(hint, value, path)
            _validate_instance(nested, path)  # a nested class need not be registered itself
            return nested
        raise ValueError(f"{path} must be an object")
    raise TypeError(f"{path}: livepanel cannot validate fields of type {hint!r}")


def _fields_of(cls: type[Any]) -> tuple[_Field, ...]:
    cached = _FIELDS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        cached = tuple(
            _Field(
                f.name,
                wire_name(f.name),
                hints[f.name],
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        )
        _FIELDS[cls] = cached
    return cached


def from_wire(cls: type[T], data: Mapping[str, Any], path: str | None = None) -> T:
    """Build an instance of payload class ``cls`` from a mapping with the wire's keys.

    Raises:
        ValueError: an unknown or missing key, or a value that does not fit its field;
            the message starts with ``path`` (default: the class's name).

    Example::

        >>> @dataclasses.dataclass
        ... class Deploy:
        ...     service_name: str
        >>> from_wire(Deploy, {"serviceName": "api"})
        Deploy(service_name='api')
    """
    if path is None:
        path = cls.__name__
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


def to_wire(value: Any) -> Any:
    """The wire form of a payload object: camelCase keys, ISO 8601 times, ``None`` fields
    that are optional left out; lists, mappings and nested dataclasses likewise.

    Example::

        >>> @dataclasses.dataclass
        ... class Deploy:
        ...     service_name: str
        ...     note: str | None = None
        >>> to_wire(Deploy("api"))
        {'serviceName': 'api'}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in _fields_of(type(value)):
            v = getattr(value, f.name)
            if v is None and not f.required:
                continue
            out[f.wire] = to_wire(v)
        return out
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    return value


def install_validation(cls: type[Any]) -> None:
    """Make constructing dataclass ``cls`` validate and normalise its fields (wrapping any
    ``__post_init__``); :func:`~livepanel.events.event_type` calls it.

    Example::

        >>> @dataclasses.dataclass(frozen=True)
        ... class Deploy:
        ...     duration_ms: Annotated[int, NonNegative()]
        >>> install_validation(Deploy)
        >>> Deploy(duration_ms=-1)
        Traceback (most recent call last):
          ...
        ValueError: Deploy.durationMs must be >= 0, got -1
    """
    _FIELDS.pop(cls, None)  # a class registered again (a reload) is read again
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
