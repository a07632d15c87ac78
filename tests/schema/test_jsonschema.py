"""The payload schemas, checked by a real JSON Schema validator against what the server does."""

from __future__ import annotations

import dataclasses
import enum
import itertools
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livepanel.events import NonNegative, event_type, format_timestamp, prepare_payload
from livepanel.events.redaction import REDACTED, STREAM_OUTPUT_LIMIT
from livepanel.schema import UnsupportedAnnotation, event_schemas, payload_schema

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (the dev extra)")

_names = itertools.count()


def validator(schema: dict[str, Any]) -> Any:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# ------------------------------------------------------------------ annotation kinds


@dataclasses.dataclass
class Kind:
    """A field annotation with the wire values the server accepts and those it refuses."""

    hint: Any
    valid: st.SearchStrategy[Any]
    invalid: st.SearchStrategy[Any]


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


_not_text = st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), max_size=2))
_fractions = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
_plain_keys = st.sampled_from(["a", "b", "host", "count"])
_any_keys = st.sampled_from(["a", "b", "host", "apiKey", "db_password", "Session-Token"])

SCALARS = [
    Kind(str, st.text(max_size=12), _not_text),
    Kind(
        int, st.integers(-(10**9), 10**9), st.one_of(st.text(max_size=4), st.booleans(), _fractions)
    ),
    Kind(
        Annotated[int, NonNegative()],
        st.integers(0, 10**9),
        st.one_of(st.integers(max_value=-1), st.text(max_size=4)),
    ),
    Kind(
        float,
        st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-100, 100)),
        st.one_of(st.text(max_size=4), st.booleans(), st.none()),
    ),
    Kind(
        Annotated[float, NonNegative()],
        st.floats(min_value=0, allow_nan=False, allow_infinity=False),
        st.floats(max_value=-0.001, allow_nan=False, allow_infinity=False),
    ),
    Kind(bool, st.booleans(), st.one_of(st.integers(), st.text(max_size=4))),
    Kind(
        Literal["direct", "cron", "subagent"],
        st.sampled_from(["direct", "cron", "subagent"]),
        st.one_of(
            st.text(max_size=6).filter(lambda t: t not in ("direct", "cron", "subagent")),
            st.integers(),
        ),
    ),
    Kind(Literal[1, 2, 3], st.sampled_from([1, 2, 3]), st.integers(4, 100)),
    Kind(Colour, st.sampled_from(["red", "green"]), st.one_of(st.text(max_size=3), st.integers())),
    Kind(Level, st.sampled_from([1, 2]), st.one_of(st.integers(3, 9), st.text(max_size=2))),
    Kind(
        datetime,
        st.one_of(
            st.datetimes(
                min_value=datetime(1970, 1, 1),
                max_value=datetime(2100, 1, 1),
                timezones=st.just(timezone.utc),
            ).map(format_timestamp),
            st.just("2026-02-21T10:00:00Z"),
            st.just("2026-02-21T12:00:00+02:00"),
        ),
        st.one_of(st.sampled_from(["yesterday", "", "21/02/2026"]), st.integers()),
    ),
]


def _nested(inner: st.SearchStrategy[Kind]) -> st.SearchStrategy[Kind]:
    def list_of(kind: Kind) -> Kind:
        return Kind(
            list[kind.hint],
            st.lists(kind.valid, max_size=3),
            st.one_of(st.text(max_size=3), st.lists(kind.invalid, min_size=1, max_size=2)),
        )

    def tuple_of(kind: Kind) -> Kind:
        return Kind(tuple[kind.hint, ...], st.lists(kind.valid, max_size=3), st.integers())

    def dict_of(kind: Kind) -> Kind:
        return Kind(
            dict[str, kind.hint],
            st.dictionaries(_any_keys, kind.valid, max_size=3),
            st.one_of(
                st.lists(st.integers(), max_size=2),
                st.dictionaries(_plain_keys, kind.invalid, min_size=1, max_size=2),
            ),
        )

    def nullable(kind: Kind) -> Kind:
        return Kind(kind.hint | None, st.one_of(st.none(), kind.valid), kind.invalid)

    return st.one_of(
        inner.map(list_of),
        inner.map(tuple_of),
        inner.map(dict_of),
        inner.map(nullable),
        st.builds(_dataclass_kind, st.lists(inner, min_size=1, max_size=3)),
    )


def _dataclass_kind(kinds: list[Kind]) -> Kind:
    """A nested dataclass of required fields of the given kinds."""
    names = [f"part_{n}" for n in range(len(kinds))]
    cls = dataclasses.make_dataclass(
        f"Nested{next(_names)}",
        [(n, k.hint) for n, k in zip(names, kinds, strict=True)],
        frozen=True,
    )
    wire = [f"part{n}" for n in range(len(kinds))]
    valid = st.fixed_dictionaries({w: k.valid for w, k in zip(wire, kinds, strict=True)})
    invalid = st.one_of(
        st.text(max_size=3),
        st.just({}),  # every required field missing
        valid.map(lambda d: {**d, "stray": 1}),
        st.tuples(st.sampled_from(range(len(kinds))), st.data()).map(lambda _: {"stray": 1}),
    )
    return Kind(cls, valid, invalid)


KINDS = st.recursive(st.sampled_from(SCALARS), _nested, max_leaves=4)


@dataclasses.dataclass
class Field:
    name: str
    kind: Kind
    required: bool


FIELD_NAMES = ["service", "duration_ms", "api_token", "stdout", "host_name", "count", "note"]


@st.composite
def payload_types(draw: st.DrawFn) -> tuple[type[Any], list[Field]]:
    names = draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=4, unique=True))
    fields = [Field(name, draw(KINDS), draw(st.booleans())) for name in names]
    fields.sort(key=lambda f: not f.required)  # a dataclass lists its defaults last
    spec = [
        (f.name, f.kind.hint)
        if f.required
        else (f.name, f.kind.hint | None, dataclasses.field(default=None))
        for f in fields
    ]
    cls = dataclasses.make_dataclass(f"Generated{next(_names)}", spec, frozen=True)
    return cls, fields


def _wire(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


@st.composite
def accepted(draw: st.DrawFn, fields: list[Field]) -> dict[str, Any]:
    payload = {}
    for field in fields:
        if field.required or draw(st.booleans()):
            payload[_wire(field.name)] = draw(field.kind.valid)
    return payload


@st.composite
def refused(draw: st.DrawFn, fields: list[Field]) -> dict[str, Any]:
    payload = draw(accepted(fields))
    how = draw(st.sampled_from(["value", "missing", "unknown"]))
    required = [f for f in fields if f.required]
    if how == "missing" and required:
        del payload[_wire(draw(st.sampled_from(required)).name)]
    elif how == "unknown":
        payload["notAField"] = draw(st.integers())
    else:
        field = draw(st.sampled_from(fields))
        payload[_wire(field.name)] = draw(field.kind.invalid)
    return payload


# ------------------------------------------------------------------ the properties


@pytest.mark.usefixtures("registry")
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_payload_the_server_publishes_validates_against_its_schema(data: Any) -> None:
    """Any payload the server accepts, in the form it publishes (validated, redacted), is valid."""
    cls, fields = data.draw(payload_types())
    kind = f"prop.accepted{next(_names)}"
    event_type(kind)(cls)
    check = validator(event_schemas({kind: cls})[kind])
    payload = data.draw(accepted(fields))
    published = prepare_payload(kind, payload)
    errors = [e.message for e in check.iter_errors(published)]
    assert errors == [], (payload, published)
    # the same payload built as the dataclass publishes the same
    assert check.is_valid(prepare_payload(kind, cls(**_python(cls, payload))))


def _python(cls: type[Any], payload: dict[str, Any]) -> dict[str, Any]:
    names = {_wire(f.name): f.name for f in dataclasses.fields(cls)}
    return {names[k]: v for k, v in payload.items()}


@pytest.mark.usefixtures("registry")
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_payload_the_server_refuses_does_not_validate(data: Any) -> None:
    """A payload refused at publish (a wrong value, a missing or unknown key) is invalid too."""
    cls, fields = data.draw(payload_types())
    kind = f"prop.refused{next(_names)}"
    event_type(kind)(cls)
    check = validator(event_schemas({kind: cls})[kind])
    payload = data.draw(refused(fields))
    with pytest.raises(ValueError):
        prepare_payload(kind, payload)
    assert not check.is_valid(payload), payload


# ------------------------------------------------------------------ one rule each


def test_wire_names_are_camel_case_and_defaults_are_optional_keys() -> None:
    """Fields travel camelCase; a field with a default is an optional key, never null."""

    @dataclasses.dataclass
    class Deploy:
        service_name: str
        duration_ms: Annotated[int, NonNegative()]
        note: str | None = None

    schema = payload_schema(Deploy, "deploy.finished")
    assert schema["required"] == ["serviceName", "durationMs"]
    assert schema["properties"]["note"] == {"type": "string"}
    assert schema["properties"]["durationMs"] == {"type": "integer", "minimum": 0}
    assert schema["additionalProperties"] is False
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_a_secret_looking_field_is_always_redacted() -> None:
    """A field named like a secret carries "[redacted]" on the wire, whatever its type."""

    @dataclasses.dataclass
    class Login:
        user: str
        api_token: str
        extra: dict[str, int]

    schema = payload_schema(Login)
    assert schema["properties"]["apiToken"]["const"] == REDACTED
    check = validator(schema)
    assert check.is_valid({"user": "u", "apiToken": REDACTED, "extra": {"dbPassword": REDACTED}})
    assert not check.is_valid({"user": "u", "apiToken": "hunter2", "extra": {}})
    assert not check.is_valid({"user": "u", "apiToken": REDACTED, "extra": {"DB_PASSWORD": 3}})


@pytest.mark.usefixtures("registry")
def test_command_output_is_bounded_as_the_server_cuts_it() -> None:
    """stdout/stderr carry a maxLength; the server's cut output fits it."""

    @event_type("prop.output")
    @dataclasses.dataclass(frozen=True)
    class Ran:
        stdout: str

    published = prepare_payload("prop.output", {"stdout": "x" * (STREAM_OUTPUT_LIMIT * 2)})
    check = validator(event_schemas({"prop.output": Ran})["prop.output"])
    assert check.is_valid(published)
    assert not check.is_valid({"stdout": "x" * (STREAM_OUTPUT_LIMIT + 1)})


@dataclasses.dataclass
class Host:
    name: str


@dataclasses.dataclass
class Rollout:
    primary: Host
    replicas: list[Host]


def test_nested_dataclasses_are_shared_definitions() -> None:
    """A nested dataclass is one $defs entry, referenced wherever it is used."""

    schema = payload_schema(Rollout)
    assert schema["properties"]["primary"] == {"$ref": "#/$defs/Host"}
    assert schema["properties"]["replicas"]["items"] == {"$ref": "#/$defs/Host"}
    assert schema["$defs"]["Host"]["required"] == ["name"]
    check = validator(schema)
    assert check.is_valid({"primary": {"name": "a"}, "replicas": [{"name": "b"}]})
    assert not check.is_valid({"primary": {"name": "a", "port": 1}, "replicas": []})


@pytest.mark.parametrize(
    ("hint", "named"),
    [(bytes, "bytes"), (set[str], "set"), (tuple[int, str], "tuple"), (dict[int, str], "int")],
)
def test_an_unsupported_annotation_names_the_field(hint: Any, named: str) -> None:
    """A field type livepanel cannot describe is a clear error naming the class and the field."""
    cls = dataclasses.make_dataclass("Odd", [("blob_field", hint)])
    with pytest.raises(UnsupportedAnnotation, match=rf"^Odd\.blob_field: .*{named}"):
        payload_schema(cls)


def test_the_builtin_types_match_the_spec() -> None:
    """The seed's five types as SPEC section 3 lists them, with their state rules."""
    from livepanel.events import builtin

    schemas = event_schemas({name: builtin.__dict__[cls] for name, cls in _BUILTIN.items()})
    created = schemas["session.created"]
    assert created["properties"]["kind"] == {"enum": ["direct", "cron", "subagent"]}
    assert created["required"] == ["sessionKey", "agentId", "kind"]
    assert created["x-livepanel-state"] == {
        "collection": "sessions",
        "key": "sessionKey",
        "keep": None,
        "removes": False,
    }
    assert schemas["agent.status"]["properties"]["lastActivity"]["format"] == "date-time"
    assert schemas["gateway.status"]["properties"]["uptime"] == {"type": "number", "minimum": 0}


_BUILTIN = {
    "session.created": "SessionCreated",
    "session.killed": "SessionKilled",
    "agent.status": "AgentStatus",
    "cron.executed": "CronExecuted",
    "gateway.status": "GatewayStatus",
}
