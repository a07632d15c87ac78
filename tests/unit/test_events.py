"""Typed events: the built-in payloads, validation, the envelope, redaction and output cuts."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import livepanel.events.redaction
from livepanel import Event, event_type
from livepanel.events import (
    REDACTED,
    STREAM_OUTPUT_LIMIT,
    AgentStatus,
    CronExecuted,
    GatewayStatus,
    NonNegative,
    SessionCreated,
    SessionKilled,
    add_secret_pattern,
    format_timestamp,
    parse_timestamp,
    prepare_payload,
    registered_types,
)

UTC = timezone.utc
SECRET_WORDS = ("password", "secret", "token", "apikey", "authorization")

# --------------------------------------------------------------------------- custom types


@event_type("test.deploy.finished")
class DeployFinished:
    service: str
    duration_ms: Annotated[int, NonNegative()]
    environment: Literal["staging", "production"] = "production"
    notes: str | None = None


@dataclasses.dataclass
class Step:
    name: str
    ok: bool


@event_type("test.pipeline.ran")
@dataclasses.dataclass(frozen=True)
class PipelineRan:
    pipeline: str
    steps: list[Step]
    tags: list[str] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    api_key: str | None = None
    started_at: datetime | None = None
    seen_post_init: bool = dataclasses.field(default=False, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seen_post_init", True)


@event_type("test.odd.fields")
class OddFields:
    labels: frozenset[str]


@event_type("test.config.changed")
@dataclasses.dataclass(frozen=True)
class ConfigChanged:
    service: str
    settings: dict[str, Any]


def wire(payload: Any) -> dict[str, Any]:
    """The redacted wire form of a payload object."""
    return prepare_payload(payload.type, payload)


def nested(key: str, value: Any, depth: int) -> dict[str, Any]:
    """``{"level": [{"level": [... {key: value}]}]}`` with ``depth`` levels above ``key``."""
    data: dict[str, Any] = {key: value}
    for _ in range(depth):
        data = {"level": [data]}
    return data


# --------------------------------------------------------------------------- built-in payloads


@pytest.mark.parametrize(
    ("cls", "name"),
    [
        (SessionCreated, "session.created"),
        (SessionKilled, "session.killed"),
        (AgentStatus, "agent.status"),
        (CronExecuted, "cron.executed"),
        (GatewayStatus, "gateway.status"),
    ],
)
def test_builtin_payload_carries_its_event_type(cls: type[Any], name: str) -> None:
    """Each built-in payload class has its event type as a ``type`` class attribute."""
    assert cls.type == name
    assert registered_types()[name] is cls


def test_session_created_travels_with_camel_case_keys() -> None:
    """session.created: snake_case fields become sessionKey, agentId, kind, label."""
    payload = SessionCreated(session_key="s1", agent_id="a1", kind="subagent", label="nightly")
    assert wire(payload) == {
        "sessionKey": "s1",
        "agentId": "a1",
        "kind": "subagent",
        "label": "nightly",
    }


def test_session_created_omits_an_absent_label() -> None:
    """An optional field left as None is omitted on the wire, not sent as null."""
    assert wire(SessionCreated("s1", "a1", "direct")) == {
        "sessionKey": "s1",
        "agentId": "a1",
        "kind": "direct",
    }


@pytest.mark.parametrize("kind", ["direct", "cron", "subagent"])
def test_session_created_accepts_every_kind(kind: str) -> None:
    """session.created's kind is one of direct, cron and subagent."""
    assert wire(SessionCreated("s1", "a1", kind))["kind"] == kind  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["manual", "Direct", "", None, 1, True])
def test_session_created_refuses_another_kind(kind: Any) -> None:
    """A kind outside the enum raises ValueError."""
    with pytest.raises(ValueError, match="kind"):
        SessionCreated("s1", "a1", kind)


def test_session_killed_travels_with_camel_case_keys() -> None:
    """session.killed carries sessionKey and agentId."""
    assert wire(SessionKilled("s1", "a1")) == {"sessionKey": "s1", "agentId": "a1"}


@pytest.mark.parametrize(("session_key", "agent_id"), [(1, "a1"), ("s1", None), (b"s1", "a1")])
def test_session_killed_refuses_non_string_keys(session_key: Any, agent_id: Any) -> None:
    """String fields refuse values of another type."""
    with pytest.raises(ValueError, match="must be a string"):
        SessionKilled(session_key, agent_id)


def test_agent_status_travels_with_camel_case_keys() -> None:
    """agent.status carries agentId, status and activeSessionCount."""
    assert wire(AgentStatus("a1", "idle", active_session_count=0)) == {
        "agentId": "a1",
        "status": "idle",
        "activeSessionCount": 0,
    }


@pytest.mark.parametrize("status", ["stopped", "RUNNING", ""])
def test_agent_status_refuses_an_unknown_status(status: str) -> None:
    """agent.status's status is one of running, idle and error."""
    with pytest.raises(ValueError, match="status"):
        AgentStatus("a1", status, active_session_count=1)  # type: ignore[arg-type]


def test_agent_status_refuses_a_negative_session_count() -> None:
    """activeSessionCount is an int >= 0."""
    with pytest.raises(ValueError, match=">= 0"):
        AgentStatus("a1", "running", active_session_count=-1)


@pytest.mark.parametrize("count", [1.0, "1", True, None])
def test_agent_status_refuses_a_session_count_that_is_not_an_int(count: Any) -> None:
    """activeSessionCount refuses floats, strings, booleans and null."""
    with pytest.raises(ValueError, match="activeSessionCount"):
        AgentStatus("a1", "running", active_session_count=count)


def test_agent_status_last_activity_takes_a_datetime() -> None:
    """A datetime last_activity travels as ISO 8601 UTC with milliseconds and Z."""
    moment = datetime(2026, 2, 21, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    payload = AgentStatus("a1", "running", 1, last_activity=moment)
    assert wire(payload)["lastActivity"] == "2026-02-21T10:00:00.123Z"


def test_agent_status_last_activity_takes_an_iso_string() -> None:
    """An ISO 8601 string last_activity is parsed and normalised to UTC."""
    payload = AgentStatus("a1", "running", 1, last_activity="2026-02-21T12:00:00.5+02:00")
    assert payload.last_activity == datetime(2026, 2, 21, 10, 0, 0, 500000, tzinfo=UTC)
    assert wire(payload)["lastActivity"] == "2026-02-21T10:00:00.500Z"


def test_timestamps_take_a_fraction_of_any_length_on_every_python() -> None:
    """One digit, nine (Go's RFC 3339 with nanoseconds, cut to microseconds) and a comma:
    the same instant whatever Python reads them (3.10's own parser takes 3 or 6 digits)."""
    assert parse_timestamp("2026-02-21T10:00:00.5Z") == datetime(2026, 2, 21, 10, 0, 0, 500000, UTC)
    nano = parse_timestamp("2026-02-21T10:00:00.123456789Z")
    assert nano == datetime(2026, 2, 21, 10, 0, 0, 123456, UTC)
    assert parse_timestamp("2026-02-21 12:00:00,25+02:00") == datetime(
        2026, 2, 21, 10, 0, 0, 250000, UTC
    )
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_timestamp("2026-02-21T10:00:00.5 o'clock")


def test_agent_status_last_activity_without_offset_is_utc() -> None:
    """A naive last_activity is taken as UTC."""
    payload = AgentStatus("a1", "idle", 0, last_activity=datetime(2026, 2, 21, 10, 0))
    assert wire(payload)["lastActivity"] == "2026-02-21T10:00:00.000Z"


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", 1700000000, ""])
def test_agent_status_refuses_a_last_activity_that_is_not_a_date_time(value: Any) -> None:
    """last_activity refuses strings that are not ISO 8601 and non-strings."""
    with pytest.raises(ValueError, match="lastActivity"):
        AgentStatus("a1", "idle", 0, last_activity=value)


def test_agent_status_omits_an_absent_last_activity() -> None:
    """Without last_activity the wire payload has no lastActivity key."""
    assert "lastActivity" not in wire(AgentStatus("a1", "error", 3))


def test_cron_executed_travels_with_camel_case_keys() -> None:
    """cron.executed carries jobId, command, exitCode, stdout, stderr and durationMs."""
    payload = CronExecuted("backup", "tar czf x", 2, 812, stdout="ok", stderr="warn")
    assert wire(payload) == {
        "jobId": "backup",
        "command": "tar czf x",
        "exitCode": 2,
        "durationMs": 812,
        "stdout": "ok",
        "stderr": "warn",
    }


def test_cron_executed_omits_absent_output() -> None:
    """Without stdout and stderr the wire payload has neither key."""
    assert set(wire(CronExecuted("backup", "true", 0, 5))) == {
        "jobId",
        "command",
        "exitCode",
        "durationMs",
    }


def test_cron_executed_accepts_a_negative_exit_code() -> None:
    """exitCode is any int (a process killed by a signal reports a negative one)."""
    assert wire(CronExecuted("backup", "true", -9, 5))["exitCode"] == -9


@pytest.mark.parametrize("exit_code", [0.0, "0", False, None])
def test_cron_executed_refuses_an_exit_code_that_is_not_an_int(exit_code: Any) -> None:
    """exitCode refuses floats, strings, booleans and null."""
    with pytest.raises(ValueError, match="exitCode"):
        CronExecuted("backup", "true", exit_code, 5)


def test_cron_executed_refuses_a_negative_duration() -> None:
    """durationMs is an int >= 0."""
    with pytest.raises(ValueError, match="durationMs must be >= 0"):
        CronExecuted("backup", "true", 0, -1)


def test_gateway_status_travels_with_camel_case_keys() -> None:
    """gateway.status carries status, version and uptime in seconds."""
    assert wire(GatewayStatus("running", "1.4.2", uptime=3600.5)) == {
        "status": "running",
        "version": "1.4.2",
        "uptime": 3600.5,
    }


def test_gateway_status_accepts_an_int_uptime_as_a_float() -> None:
    """An int uptime is accepted and stored as a float."""
    payload = GatewayStatus("stopped", "1.4.2", uptime=3600)
    assert isinstance(payload.uptime, float)
    assert payload.uptime == 3600.0


@pytest.mark.parametrize("uptime", [-0.5, -1, float("nan"), float("inf"), "10", True])
def test_gateway_status_refuses_an_uptime_that_is_not_a_non_negative_number(uptime: Any) -> None:
    """uptime refuses negatives, NaN, infinity, strings and booleans."""
    with pytest.raises(ValueError, match="uptime"):
        GatewayStatus("running", "1.4.2", uptime=uptime)


@pytest.mark.parametrize("status", ["idle", "up", None])
def test_gateway_status_refuses_an_unknown_status(status: Any) -> None:
    """gateway.status's status is one of running, stopped and error."""
    with pytest.raises(ValueError, match="status"):
        GatewayStatus(status, "1.4.2", uptime=1)


# --------------------------------------------------------------------------- mapping payloads


def test_mapping_payload_uses_camel_case_keys() -> None:
    """A mapping payload with the wire's keys is validated into the wire form."""
    payload = {"agentId": "a1", "status": "running", "activeSessionCount": 2}
    assert prepare_payload("agent.status", payload) == payload


def test_mapping_payload_is_validated_through_the_dataclass() -> None:
    """A mapping payload gets the dataclass's checks: int uptime becomes a float."""
    prepared = prepare_payload("gateway.status", {"status": "running", "version": "1", "uptime": 7})
    assert prepared["uptime"] == 7.0
    assert isinstance(prepared["uptime"], float)


def test_mapping_payload_normalises_last_activity() -> None:
    """A mapping's lastActivity string goes out in the wire's timestamp form."""
    prepared = prepare_payload(
        "agent.status",
        {
            "agentId": "a1",
            "status": "idle",
            "activeSessionCount": 0,
            "lastActivity": "2026-02-21T10:00:00+00:00",
        },
    )
    assert prepared["lastActivity"] == "2026-02-21T10:00:00.000Z"


def test_mapping_payload_refuses_an_invalid_value() -> None:
    """A mapping payload with a value the dataclass refuses raises ValueError."""
    with pytest.raises(ValueError, match="activeSessionCount must be >= 0"):
        prepare_payload(
            "agent.status", {"agentId": "a1", "status": "idle", "activeSessionCount": -3}
        )


def test_mapping_payload_refuses_unknown_keys() -> None:
    """Keys the dataclass does not have are refused, and named in the error."""
    with pytest.raises(ValueError, match=r"unknown field\(s\) colour"):
        prepare_payload("session.killed", {"sessionKey": "s1", "agentId": "a1", "colour": "red"})


def test_mapping_payload_refuses_snake_case_keys() -> None:
    """A mapping uses the wire's camelCase keys; snake_case ones are unknown."""
    with pytest.raises(ValueError, match="session_key"):
        prepare_payload("session.killed", {"session_key": "s1", "agent_id": "a1"})


def test_mapping_payload_refuses_a_missing_required_key() -> None:
    """A mapping without a required field raises ValueError naming the wire key."""
    with pytest.raises(ValueError, match="missing required field 'agentId'"):
        prepare_payload("session.killed", {"sessionKey": "s1"})


def test_mapping_payload_treats_null_optional_as_absent() -> None:
    """An optional key sent as null is omitted from the wire form."""
    prepared = prepare_payload(
        "session.created", {"sessionKey": "s1", "agentId": "a1", "kind": "cron", "label": None}
    )
    assert "label" not in prepared


def test_no_payload_for_a_type_with_required_fields_is_refused() -> None:
    """A missing payload is an empty mapping, which lacks the required fields."""
    with pytest.raises(ValueError, match="missing required field"):
        prepare_payload("session.killed", None)


@pytest.mark.parametrize("payload", [["s1", "a1"], "s1", 42, SessionCreated("s1", "a1", "direct")])
def test_payload_of_another_kind_is_refused(payload: Any) -> None:
    """A payload that is neither the type's dataclass nor a mapping raises ValueError."""
    with pytest.raises(ValueError, match="must be a SessionKilled or a mapping"):
        prepare_payload("session.killed", payload)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1, 2}, object()])
def test_a_payload_value_that_is_not_json_is_refused(value: Any) -> None:
    """Free-form values must be JSON: NaN, infinities, sets and objects raise ValueError."""
    with pytest.raises(ValueError, match="not JSON-serializable"):
        prepare_payload("test.config.changed", {"service": "api", "settings": {"v": value}})


@pytest.mark.parametrize(
    "payload",
    [
        SessionKilled("s\udc80", "a1"),
        CronExecuted("j", "c", 0, 1, stdout="out\udcff"),
        ConfigChanged("api", {"\ud800": 1}),
    ],
)
def test_a_payload_with_text_that_is_not_unicode_is_refused(payload: Any) -> None:
    """Lone surrogates (e.g. from surrogateescape) cannot travel in a UTF-8 text frame."""
    with pytest.raises(ValueError, match="not JSON-serializable"):
        wire(payload)


def test_unregistered_type_is_refused() -> None:
    """An event type nobody registered raises ValueError that says how to register it."""
    with pytest.raises(ValueError, match=r"unregistered event type 'deploy\.unknown'.*@event_type"):
        prepare_payload("deploy.unknown", {"service": "api"})


# --------------------------------------------------------------------------- custom types


def test_event_type_turns_a_plain_class_into_a_frozen_dataclass() -> None:
    """@event_type on a plain class makes it a frozen dataclass with a type attribute."""
    payload = DeployFinished(service="api", duration_ms=840)
    assert dataclasses.is_dataclass(DeployFinished)
    assert DeployFinished.type == "test.deploy.finished"  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        payload.service = "web"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"service": "api", "duration_ms": -1}, "durationMs must be >= 0"),
        ({"service": "api", "duration_ms": 1, "environment": "dev"}, "environment must be one of"),
        ({"service": 1, "duration_ms": 1}, "service must be a string"),
    ],
)
def test_event_type_on_a_plain_class_validates_its_fields(
    kwargs: dict[str, Any], message: str
) -> None:
    """A plain registered class checks types, enums and NonNegative at construction."""
    with pytest.raises(ValueError, match=message):
        DeployFinished(**kwargs)


def test_event_type_on_a_plain_class_travels_with_camel_case_keys() -> None:
    """A plain registered class's snake_case fields are camelCase on the wire."""
    assert wire(DeployFinished(service="api", duration_ms=840)) == {
        "service": "api",
        "durationMs": 840,
        "environment": "production",
    }


def test_event_type_on_a_dataclass_keeps_its_post_init() -> None:
    """@event_type on a dataclass validates and still runs the class's own __post_init__."""
    payload = PipelineRan("build", [Step("lint", True)])
    assert payload.seen_post_init is True
    with pytest.raises(ValueError, match=r"steps\[0\]\.ok must be a boolean"):
        PipelineRan("build", [Step("lint", "yes")])  # type: ignore[arg-type]


def test_event_type_on_a_dataclass_accepts_nested_mappings() -> None:
    """A mapping payload's nested objects are validated into their dataclasses."""
    prepared = prepare_payload(
        "test.pipeline.ran",
        {"pipeline": "build", "steps": [{"name": "lint", "ok": True}], "tags": ["ci"]},
    )
    assert prepared["steps"] == [{"name": "lint", "ok": True}]
    assert prepared["tags"] == ["ci"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": [], "tags": ["ci", 3]}, r"tags\[1\] must be a string"),
        ({"steps": "lint"}, "steps must be a list"),
        ({"steps": [], "details": ["x"]}, "details must be an object"),
        ({"steps": ["lint"]}, r"steps\[0\] must be an object"),
    ],
)
def test_event_type_on_a_dataclass_refuses_bad_nested_values(
    kwargs: dict[str, Any], message: str
) -> None:
    """Nested lists and objects are checked item by item."""
    with pytest.raises(ValueError, match=message):
        PipelineRan("build", **kwargs)


def test_event_type_on_a_dataclass_refuses_non_string_keys() -> None:
    """Object fields hold string keys only, as JSON does."""
    with pytest.raises(ValueError, match="details keys must be strings"):
        PipelineRan("build", [], details={1: "x"})  # type: ignore[dict-item]


def test_mapping_payload_cannot_set_a_field_outside_init() -> None:
    """A field the dataclass computes itself (init=False) cannot come from a mapping."""
    with pytest.raises(ValueError, match="seen_post_init"):
        prepare_payload("test.pipeline.ran", {"pipeline": "b", "steps": [], "seenPostInit": True})


def test_field_of_a_type_livepanel_cannot_check_is_a_type_error() -> None:
    """A field annotated with a type validation does not support fails loudly, naming it."""
    with pytest.raises(TypeError, match="cannot validate fields of type"):
        OddFields(labels=frozenset({"a"}))


def test_non_negative_marker_has_a_readable_repr() -> None:
    """NonNegative() shows as such in type hints and errors."""
    assert repr(NonNegative()) == "NonNegative()"


def test_event_type_refuses_a_name_that_is_not_dotted_words() -> None:
    """Event type names are dotted words like 'deploy.finished'."""
    for name in ["", "deploy finished", "deploy..finished", ".deploy", "deploy\n", "x" * 129, 7]:
        with pytest.raises(ValueError, match="dotted words"):
            event_type(name)  # type: ignore[arg-type]


def test_event_type_refuses_a_second_class_for_a_taken_name() -> None:
    """A name already registered to another class is refused."""

    class Impostor:
        service: str

    with pytest.raises(ValueError, match="already registered to DeployFinished"):
        event_type("test.deploy.finished")(Impostor)
    Impostor.__qualname__ = Impostor.__name__ = "DeployFinished"
    Impostor.__module__ = "somewhere.else"
    with pytest.raises(ValueError, match="already registered to DeployFinished"):
        event_type("test.deploy.finished")(Impostor)
    assert registered_types()["test.deploy.finished"] is DeployFinished


def test_event_type_accepts_registering_the_same_class_again() -> None:
    """Registering a class again under its name (as a module reload does) is harmless."""
    assert event_type("test.deploy.finished")(DeployFinished) is DeployFinished
    assert registered_types()["test.deploy.finished"] is DeployFinished
    assert wire(DeployFinished(service="api", duration_ms=1))["durationMs"] == 1
    with pytest.raises(ValueError, match="durationMs must be >= 0"):
        DeployFinished(service="api", duration_ms=-1)


def test_registered_types_is_read_only() -> None:
    """registered_types() is a view that cannot be used to register types."""
    with pytest.raises(TypeError):
        registered_types()["x.y"] = DeployFinished  # type: ignore[index]


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "db_password",
        "clientSecret",
        "client-secret",
        "accessToken",
        "refresh_token",
        "apikey",
        "API_KEY",
        "api-key",
        "Authorization",
        "proxy_authorization",
        "passwd",
        "db_pwd",
        "passphrase",
        "private_key",
        "privateKey",
        "credentials",
        "aws-credential",
        "cookie",
        "Set-Cookie",
    ],
)
def test_secret_looking_keys_are_redacted(key: str) -> None:
    """A key containing one of SECRET_KEY_WORDS (password, passwd, pwd, secret, token, ...) is
    redacted."""
    prepared = prepare_payload(
        "test.config.changed", {"service": "api", "settings": {key: "hunter2"}}
    )
    assert prepared["settings"] == {key: REDACTED}


@pytest.mark.parametrize("key", ["user", "key", "api", "auth", "sessionKey", "cwd", "publicKey"])
def test_other_keys_are_not_redacted(key: str) -> None:
    """Keys without a secret word keep their value."""
    prepared = prepare_payload("test.config.changed", {"service": "api", "settings": {key: "v"}})
    assert prepared["settings"] == {key: "v"}


@pytest.mark.parametrize("depth", [0, 1, 5])
def test_secret_looking_keys_are_redacted_at_any_depth(depth: int) -> None:
    """Redaction reaches keys inside nested objects and lists."""
    settings = nested("dbPassword", "hunter2", depth)
    prepared = prepare_payload("test.config.changed", {"service": "api", "settings": settings})
    assert prepared["settings"] == nested("dbPassword", REDACTED, depth)
    assert "hunter2" not in json.dumps(prepared)


def test_a_secret_looking_key_redacts_its_whole_value() -> None:
    """An object under a secret-looking key is replaced as a whole."""
    prepared = prepare_payload(
        "test.config.changed",
        {"service": "api", "settings": {"secrets": {"db": "hunter2", "n": 1}}},
    )
    assert prepared["settings"] == {"secrets": REDACTED}


def test_a_secret_looking_field_of_a_payload_class_is_redacted() -> None:
    """A dataclass field like api_key travels as apiKey and is redacted."""
    prepared = wire(PipelineRan("build", [], api_key="sk-live-123"))
    assert prepared["apiKey"] == REDACTED


def test_the_payload_object_itself_is_not_redacted() -> None:
    """Redaction changes the wire form only, never the publisher's object."""
    settings = {"password": "hunter2"}
    prepare_payload("test.config.changed", {"service": "api", "settings": settings})
    assert settings == {"password": "hunter2"}


json_leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
key_parts = st.sampled_from(["user", "Pass", "word", "api", "_", "-", "KEY", "toKen", "Secret"])
json_keys = st.lists(key_parts, max_size=4).map("".join)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_keys, inner, max_size=4),
    max_leaves=15,
)


def assert_secrets_redacted(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            folded = key.lower().replace("_", "").replace("-", "")
            if any(word in folded for word in SECRET_WORDS):
                assert item == REDACTED, key
            else:
                assert_secrets_redacted(item)
    elif isinstance(value, list):
        for item in value:
            assert_secrets_redacted(item)


@given(settings=st.dictionaries(json_keys, json_values, max_size=6))
def test_no_secret_looking_key_keeps_its_value(settings: dict[str, Any]) -> None:
    """Property: in any payload, every secret-looking key at any depth holds "[redacted]"."""
    prepared = prepare_payload("test.config.changed", {"service": "api", "settings": settings})
    assert_secrets_redacted(prepared)


# --------------------------------------------------------------------------- command output


def test_short_stdout_is_kept_whole() -> None:
    """stdout within 65,536 UTF-8 bytes is sent unchanged."""
    text = "x" * STREAM_OUTPUT_LIMIT
    assert wire(CronExecuted("j", "c", 0, 1, stdout=text))["stdout"] == text


@pytest.mark.parametrize("field", ["stdout", "stderr"])
def test_long_output_is_cut_to_64_kib_with_a_marker(field: str) -> None:
    """stdout and stderr over 65,536 UTF-8 bytes are cut to at most that, marker included."""
    text = "y" * (STREAM_OUTPUT_LIMIT + 1)
    cut = wire(CronExecuted("j", "c", 0, 1, **{field: text}))[field]
    assert len(cut.encode("utf-8")) <= STREAM_OUTPUT_LIMIT
    assert cut.endswith(f"[truncated {STREAM_OUTPUT_LIMIT + 1} bytes to {STREAM_OUTPUT_LIMIT}]")
    assert text.startswith(cut.rsplit("\n", 1)[0])


def test_long_multibyte_output_is_cut_on_a_character_boundary() -> None:
    """Cutting never splits a multi-byte character."""
    text = "€" * STREAM_OUTPUT_LIMIT  # 3 bytes each
    cut = wire(CronExecuted("j", "c", 0, 1, stdout=text))["stdout"]
    kept = cut.rsplit("\n", 1)[0]
    assert set(kept) == {"€"}
    size = len(cut.encode("utf-8"))
    assert STREAM_OUTPUT_LIMIT - 3 < size <= STREAM_OUTPUT_LIMIT  # at most one character lost


def test_other_long_strings_are_not_cut() -> None:
    """Only stdout and stderr are cut; other fields keep their length."""
    command = "z" * (STREAM_OUTPUT_LIMIT * 2)
    assert wire(CronExecuted("j", command, 0, 1))["command"] == command


@given(
    unit=st.text(alphabet="aé€😀\n", min_size=1, max_size=8),
    extra=st.integers(min_value=-4, max_value=64),
)
def test_output_never_exceeds_the_limit(unit: str, extra: int) -> None:
    """Property: any multi-byte output near the limit is at most 65,536 bytes and a prefix."""
    size = len(unit.encode("utf-8"))
    text = unit * (STREAM_OUTPUT_LIMIT // size) + "é" * max(extra, 0)
    cut = wire(CronExecuted("j", "c", 0, 1, stdout=text))["stdout"]
    assert len(cut.encode("utf-8")) <= STREAM_OUTPUT_LIMIT
    if cut != text:
        kept, _, marker = cut.rpartition("\n")
        assert marker.startswith("[truncated ")
        assert text.startswith(kept)


# --------------------------------------------------------------------------- timestamps


def test_timestamps_are_utc_with_milliseconds_and_z() -> None:
    """format_timestamp gives ISO 8601 UTC with exactly three fraction digits and Z."""
    moment = datetime(2026, 2, 21, 10, 0, 0, 123999, tzinfo=UTC)
    assert format_timestamp(moment) == "2026-02-21T10:00:00.123Z"


def test_timestamps_with_an_offset_are_converted_to_utc() -> None:
    """An aware datetime in another zone is shown in UTC."""
    moment = datetime(2026, 2, 21, 5, 30, tzinfo=timezone(timedelta(hours=-4, minutes=-30)))
    assert format_timestamp(moment) == "2026-02-21T10:00:00.000Z"


def test_timestamps_before_year_1000_keep_four_digit_years() -> None:
    """Years below 1000 are zero-padded, so the text stays ISO 8601."""
    stamp = format_timestamp(datetime(5, 1, 2, tzinfo=UTC))
    assert stamp == "0005-01-02T00:00:00.000Z"
    assert parse_timestamp(stamp) == datetime(5, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-02-21T10:00:00.123Z", datetime(2026, 2, 21, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2026-02-21T10:00:00z", datetime(2026, 2, 21, 10, 0, tzinfo=UTC)),
        ("2026-02-21T12:00:00+02:00", datetime(2026, 2, 21, 10, 0, tzinfo=UTC)),
        ("2026-02-21T10:00:00", datetime(2026, 2, 21, 10, 0, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_reads_iso_8601(text: str, expected: datetime) -> None:
    """parse_timestamp reads Z, offsets and no offset (UTC) into an aware UTC datetime."""
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize(
    "value", ["", "now", "21/02/2026", "2026-02-30T00:00:00Z", "9999-12-31T23:59:59-01:00", 5]
)
def test_parse_timestamp_refuses_what_is_not_an_iso_date_time(value: Any) -> None:
    """Garbage, impossible dates, out-of-range instants and non-strings raise ValueError."""
    with pytest.raises(ValueError, match=r"ISO 8601|out of range"):
        parse_timestamp(value)


def test_an_out_of_range_last_activity_is_a_value_error() -> None:
    """A datetime that cannot be expressed in UTC is refused with ValueError."""
    moment = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    with pytest.raises(ValueError, match="out of range"):
        AgentStatus("a1", "idle", 0, last_activity=moment)


# --------------------------------------------------------------------------- the envelope


def test_event_timestamp_defaults_to_now_in_utc_at_millisecond_precision() -> None:
    """A new Event is stamped now, in UTC, with whole milliseconds."""
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    event = Event("session.killed", {"sessionKey": "s1", "agentId": "a1"})
    assert before <= event.timestamp <= datetime.now(UTC)
    assert event.timestamp.tzinfo == UTC
    assert event.timestamp.microsecond % 1000 == 0


def test_event_timestamp_is_kept_at_millisecond_precision() -> None:
    """Microseconds beyond the millisecond are dropped, as the wire does."""
    event = Event("x.y", {}, datetime(2026, 2, 21, 10, 0, 0, 123999, tzinfo=UTC))
    assert event.timestamp == datetime(2026, 2, 21, 10, 0, 0, 123000, tzinfo=UTC)


def test_event_is_frozen() -> None:
    """An Event cannot be changed once built."""
    event = Event("x.y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.id = "e:1"  # type: ignore[misc]


def test_event_to_json_is_the_wire_object() -> None:
    """to_json gives type, timestamp, payload and id, compactly."""
    event = Event(
        "session.killed",
        {"sessionKey": "s1", "agentId": "a1"},
        datetime(2026, 2, 21, 10, 0, tzinfo=UTC),
        id="ep:7",
    )
    assert event.to_json() == (
        '{"type":"session.killed","timestamp":"2026-02-21T10:00:00.000Z",'
        '"payload":{"sessionKey":"s1","agentId":"a1"},"id":"ep:7"}'
    )


def test_event_to_json_omits_an_unset_id() -> None:
    """An event not yet accepted by a broadcaster has no id on the wire."""
    assert "id" not in json.loads(Event("x.y", {}).to_json())


def test_event_to_json_never_contains_a_raw_newline() -> None:
    """Newlines in payloads are escaped, so frames can be newline-delimited."""
    assert "\n" not in Event("x.y", {"stdout": "a\nb\r\n"}).to_json()


def test_event_to_json_keeps_non_ascii_text_readable() -> None:
    """Non-ASCII text is sent as UTF-8, not as escapes."""
    assert "Grüße 😀" in Event("x.y", {"label": "Grüße 😀"}).to_json()


def test_event_round_trips_through_json() -> None:
    """Event.from_json(e.to_json()) == e."""
    event = Event("session.created", wire(SessionCreated("s1", "a1", "cron")), id="ep:1")
    assert Event.from_json(event.to_json()) == event


def test_event_from_json_accepts_utf8_bytes() -> None:
    """from_json takes bytes as well as text."""
    event = Event("x.y", {"label": "é"})
    assert Event.from_json(event.to_json().encode("utf-8")) == event


def test_event_from_json_without_timestamp_is_stamped_now() -> None:
    """A frame without timestamp gets the current time; without payload, an empty one."""
    event = Event.from_json('{"type":"x.y"}')
    assert event.payload == {}
    assert abs(datetime.now(UTC) - event.timestamp) < timedelta(seconds=5)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{",
        "[]",
        "null",
        '"x.y"',
        "{}",
        '{"type": ""}',
        '{"type": 3}',
        '{"type": "x.y", "payload": []}',
        '{"type": "x.y", "payload": "p"}',
        '{"type": "x.y", "timestamp": "yesterday"}',
        '{"type": "x.y", "timestamp": 1700000000}',
        '{"type": "x.y", "timestamp": "9999-12-31T23:59:59-01:00"}',
        '{"type": "x.y", "id": 7}',
        b"\xff\xfe",
        "[" * 100_000,
    ],
)
def test_event_from_json_refuses_malformed_frames(text: str | bytes) -> None:
    """Anything but an object with a string type, ISO timestamp and object payload: ValueError."""
    with pytest.raises(ValueError):
        Event.from_json(text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": ""}, "type"),
        ({"type": 1}, "type"),
        ({"type": "x.y", "payload": [1]}, "payload"),
        ({"type": "x.y", "timestamp": "2026-02-21"}, "timestamp"),
        ({"type": "x.y", "id": 7}, "id"),
    ],
)
def test_event_refuses_malformed_fields(kwargs: dict[str, Any], message: str) -> None:
    """Event's own fields are checked when it is built."""
    with pytest.raises(ValueError, match=message):
        Event(**kwargs)


# --------------------------------------------------------------------------- round-trip property

texts = st.text(max_size=30)
offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
moments = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.none() | st.just(UTC) | st.builds(timezone, offsets),
)
counts = st.integers(min_value=0, max_value=2**63)
ids = st.builds(
    lambda epoch, n: f"{epoch}:{n}",
    st.text(alphabet="0123456789abcdef", min_size=1, max_size=8),
    st.integers(min_value=0),
)
payloads = st.one_of(
    st.builds(
        SessionCreated,
        session_key=texts,
        agent_id=texts,
        kind=st.sampled_from(["direct", "cron", "subagent"]),
        label=st.none() | texts,
    ),
    st.builds(SessionKilled, session_key=texts, agent_id=texts),
    st.builds(
        AgentStatus,
        agent_id=texts,
        status=st.sampled_from(["running", "idle", "error"]),
        active_session_count=counts,
        last_activity=st.none() | moments | moments.map(lambda m: m.isoformat()),
    ),
    st.builds(
        CronExecuted,
        job_id=texts,
        command=texts,
        exit_code=st.integers(min_value=-(2**31), max_value=2**31),
        duration_ms=counts,
        stdout=st.none() | st.text(),
        stderr=st.none() | st.text(),
    ),
    st.builds(
        GatewayStatus,
        status=st.sampled_from(["running", "stopped", "error"]),
        version=texts,
        uptime=counts | st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    ),
    st.builds(
        DeployFinished,
        service=texts,
        duration_ms=counts,
        environment=st.sampled_from(["staging", "production"]),
        notes=st.none() | texts,
    ),
    st.builds(ConfigChanged, service=texts, settings=st.dictionaries(json_keys, json_values)),
)


@given(payload=payloads, stamp=moments, event_id=st.none() | ids)
def test_every_event_type_survives_a_json_round_trip(
    payload: Any, stamp: datetime, event_id: str | None
) -> None:
    """Property: every registered type's event, whatever its payload, round-trips through JSON."""
    event = Event(payload.type, prepare_payload(payload.type, payload), stamp, event_id)
    text = event.to_json()
    assert "\n" not in text
    text.encode("utf-8")  # a text frame must be valid UTF-8
    assert Event.from_json(text) == event


TOKENS = {
    "openai": "sk-proj-" + "Ab3" * 10,
    "github classic": "ghp_" + "x9Y" * 12,
    "github fine-grained": "github_pat_" + "11ABCDEFG0" * 3,
    "slack": "xoxb-1234567890-0987654321-" + "a1" * 8,
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6y",
}


@pytest.mark.parametrize("name", sorted(TOKENS))
def test_token_shaped_values_are_redacted_inside_strings(name: str) -> None:
    """A well-known token shape inside any string value is replaced, the text around it kept."""
    token = TOKENS[name]
    prepared = prepare_payload(
        "cron.executed",
        {
            "jobId": "j",
            "command": f"deploy --key {token} --verbose",
            "exitCode": 0,
            "durationMs": 1,
            "stdout": f"using {token}\n",
        },
    )
    assert prepared["command"] == f"deploy --key {REDACTED} --verbose"
    assert prepared["stdout"] == f"using {REDACTED}\n"


def test_bearer_credentials_and_url_passwords_keep_their_context() -> None:
    """Only the credentials after Bearer and the password of a URL are replaced."""
    command = "curl -H 'Authorization: Bearer abc.def-123456' https://bot:hunter2@example.com/x"
    prepared = prepare_payload(
        "cron.executed", {"jobId": "j", "command": command, "exitCode": 0, "durationMs": 1}
    )
    assert prepared["command"] == (
        f"curl -H 'Authorization: Bearer {REDACTED}' https://bot:{REDACTED}@example.com/x"
    )
    labels = prepare_payload(
        "test.config.changed",
        {"service": "redis://:s3cret@cache:6379/0", "settings": {"urls": ["amqp://u:p@mq/"]}},
    )
    assert labels["service"] == f"redis://:{REDACTED}@cache:6379/0"
    assert labels["settings"]["urls"] == [f"amqp://u:{REDACTED}@mq/"]


@pytest.mark.parametrize(
    "text",
    [
        "task-abcdefghijklmnopqrstuvwxyz",  # not a word that starts with sk-
        "sk-short",
        "https://example.com/path?q=1",
        "mail admin@example.com",
        "ratio 3:4 @ noon",
        "AKIAIOSFODNN7EXAMPLEX",  # 17 characters after AKIA: not an access key id
        "Bearer short",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    """Text that only resembles a token keeps its value."""
    prepared = prepare_payload("test.config.changed", {"service": text, "settings": {}})
    assert prepared["service"] == text


def test_secret_patterns_are_linear_on_hostile_output() -> None:
    """Crafted output that would make a backtracking pattern explode is scanned in time
    proportional to its length: 64 KiB of any of these in well under a second."""
    for unit in ("eyJ", "eyJaaaaaaaa.", "://u:", "bearer ", "sk-", "ghp_", "x", ":", "@"):
        stdout = unit * (60_000 // len(unit))
        started = time.perf_counter()
        prepare_payload(
            "cron.executed",
            {"jobId": "j", "command": "c", "exitCode": 0, "durationMs": 1, "stdout": stdout},
        )
        assert time.perf_counter() - started < 0.5, unit


def test_add_secret_pattern_redacts_a_new_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pattern added at run time applies to later payloads; a group named secret narrows
    what is replaced; a pattern that matches nothing or everything is refused."""
    redaction = livepanel.events.redaction
    monkeypatch.setattr(redaction, "_scrubber", redaction._scrubber)  # restored
    add_secret_pattern(r"acme_(?P<secret>[0-9a-f]{32})")
    prepared = prepare_payload(
        "test.config.changed", {"service": "acme_" + "0f" * 16, "settings": {}}
    )
    assert prepared["service"] == f"acme_{REDACTED}"
    with pytest.raises(ValueError, match="empty string"):
        add_secret_pattern(r"x*")
    with pytest.raises(ValueError, match="not a regular expression"):
        add_secret_pattern(r"(unclosed")


@pytest.mark.parametrize("name", ["welcome", "ping", "pong", "error", "state"])
def test_the_protocols_own_frame_types_cannot_be_registered(name: str) -> None:
    """An event type named like a server frame could forge one: refused at registration."""
    with pytest.raises(ValueError, match="frame type"):
        event_type(name)
