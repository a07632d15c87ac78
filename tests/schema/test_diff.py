"""`livepanel schema diff`: a table of breaking and additive changes, and the command's exit."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import pytest

from livepanel.cli import main
from livepanel.events import event_type
from livepanel.schema import diff_schemas, event_schemas, is_breaking, payload_schema


@dataclasses.dataclass
class Deploy:
    service: str
    duration_ms: int
    outcome: Literal["ok", "failed", "rolled_back"]
    note: str | None = None


def base() -> dict[str, Any]:
    return {"events": {"deploy.finished": payload_schema(Deploy, "deploy.finished")}}


def edit(change: Any) -> dict[str, Any]:
    document = copy.deepcopy(base())
    change(document["events"])
    return document


def props(events: dict[str, Any]) -> dict[str, Any]:
    return events["deploy.finished"]["properties"]


def required(events: dict[str, Any]) -> list[str]:
    return events["deploy.finished"]["required"]


def rename(events: dict[str, Any]) -> None:
    props(events)["serviceName"] = props(events).pop("service")
    required(events)[required(events).index("service")] = "serviceName"


BREAKING = {
    "type removed": (lambda e: e.pop("deploy.finished"), "event type removed"),
    "required field added": (
        lambda e: (props(e).update(region={"type": "string"}), required(e).append("region")),
        "payload.region: required field added",
    ),
    "required field removed": (
        lambda e: (props(e).pop("durationMs"), required(e).remove("durationMs")),
        "payload.durationMs: required field removed",
    ),
    "required field renamed": (rename, "payload.service: required field renamed to 'serviceName'"),
    "field type changed": (
        lambda e: props(e).update(durationMs={"type": "string"}),
        "payload.durationMs: type changed from integer to string",
    ),
    "integer widened to number": (
        lambda e: props(e).update(durationMs={"type": "number"}),
        "payload.durationMs: integer widened to number",
    ),
    "literal narrowed": (
        lambda e: props(e).update(outcome={"enum": ["ok", "failed"]}),
        "payload.outcome: literal narrowed: 'rolled_back' no longer sent",
    ),
    "required made optional": (
        lambda e: required(e).remove("service"),
        "payload.service: required field made optional",
    ),
    "made nullable": (
        lambda e: props(e).update(service={"anyOf": [{"type": "string"}, {"type": "null"}]}),
        "payload.service: type changed from string to anyOf",
    ),
    "bound dropped": (
        lambda e: props(e).update(durationMs={"type": "integer"}),
        None,
    ),
}

ADDITIVE = {
    "type added": (
        lambda e: e.update({"deploy.started": {"type": "object", "properties": {}}}),
        "deploy.started: event type added",
    ),
    "optional field added": (
        lambda e: props(e).update(region={"type": "string"}),
        "payload.region: optional field added",
    ),
    "literal widened": (
        lambda e: props(e).update(outcome={"enum": ["ok", "failed", "rolled_back", "skipped"]}),
        "payload.outcome: literal widened: 'skipped' may be sent",
    ),
    "optional made required": (
        lambda e: required(e).append("note"),
        "payload.note: optional field made required",
    ),
    "optional field removed": (
        lambda e: props(e).pop("note"),
        "payload.note: optional field removed",
    ),
    "description reworded": (
        lambda e: e["deploy.finished"].update(description="Reworded."),
        None,
    ),
}


@pytest.mark.parametrize("name", list(BREAKING))
def test_a_breaking_change_is_reported_as_breaking(name: str) -> None:
    """Each change that breaks a dashboard built on OLD is flagged breaking, in one line."""
    change, line = BREAKING[name]
    old = base()
    if name == "bound dropped":
        old["events"]["deploy.finished"]["properties"]["durationMs"]["minimum"] = 0
    changes = diff_schemas(old, edit(change))
    assert is_breaking(changes), [str(c) for c in changes]
    if line is not None:
        assert any(
            str(c).startswith("breaking  deploy.finished") and str(c).endswith(line)
            for c in changes
        ), [str(c) for c in changes]


@pytest.mark.parametrize("name", list(ADDITIVE))
def test_an_additive_change_is_not_breaking(name: str) -> None:
    """A change a dashboard built on OLD keeps working with is reported, not failed."""
    change, line = ADDITIVE[name]
    changes = diff_schemas(base(), edit(change))
    assert not is_breaking(changes), [str(c) for c in changes]
    if line is not None:
        assert any(str(c).endswith(line) for c in changes), [str(c) for c in changes]


def test_nested_fields_are_compared_by_path() -> None:
    """A field of a nested dataclass is compared too, and named by its path."""

    @dataclasses.dataclass
    class Old:
        host: Host

    @dataclasses.dataclass
    class New:
        host: HostRenamed

    before = {"events": {"a.b": payload_schema(Old)}}
    after = {"events": {"a.b": payload_schema(New)}}
    changes = [str(c) for c in diff_schemas(before, after)]
    assert "breaking  a.b: payload.host.name: required field renamed to 'hostName'" in changes


@dataclasses.dataclass
class Host:
    name: str


@dataclasses.dataclass
class HostRenamed:
    host_name: str


def _write(path: Path, document: dict[str, Any]) -> str:
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def test_the_command_exits_1_on_a_breaking_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`schema diff OLD NEW` prints each change in one line and exits 1 when one breaks."""
    old = _write(tmp_path / "old.json", base())
    new = _write(tmp_path / "new.json", edit(BREAKING["literal narrowed"][0]))
    assert main(["schema", "diff", old, new]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "breaking  deploy.finished: payload.outcome: literal narrowed: 'rolled_back' no longer sent"
    ]


def test_the_command_exits_0_on_additive_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Additive changes only: exit 0, every change printed."""
    old = _write(tmp_path / "old.json", base())
    new = _write(tmp_path / "new.json", edit(ADDITIVE["optional field added"][0]))
    assert main(["schema", "diff", old, new]) == 0
    assert (
        capsys.readouterr().out
        == "additive  deploy.finished: payload.region: optional field added\n"
    )


def test_the_command_refuses_what_is_not_a_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not JSON, or not {"events": ...}, exits 2 and says what to give."""
    bad = tmp_path / "bad.json"
    bad.write_text("not json", encoding="utf-8")
    good = _write(tmp_path / "good.json", base())
    assert main(["schema", "diff", str(bad), good]) == 2
    assert "cannot read a schema" in capsys.readouterr().err
    other = _write(tmp_path / "other.json", {"openapi": "3.1.0"})
    assert main(["schema", "diff", other, good]) == 2
    assert "give two outputs of `livepanel schema`" in capsys.readouterr().err


@pytest.mark.usefixtures("registry")
def test_diff_of_two_registries_written_as_a_team_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CI recipe end to end: schema of the deployed types, then of the changed ones."""

    @event_type("deploy.ci")
    @dataclasses.dataclass(frozen=True)
    class Before:
        service: str

    old = _write(tmp_path / "old.json", {"events": event_schemas({"deploy.ci": Before})})

    @dataclasses.dataclass(frozen=True)
    class After:
        service: str
        region: str

    new = _write(tmp_path / "new.json", {"events": event_schemas({"deploy.ci": After})})
    assert main(["schema", "diff", old, new]) == 1
    assert "required field added" in capsys.readouterr().out
