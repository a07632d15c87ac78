"""`livepanel schema`, `asyncapi` and `typescript`: stdout, `--import`, and errors that say what."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str


def livepanel(*args: str, cwd: Path) -> Run:
    """The command in a process of its own, as a shell runs it: a fresh registry each time."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from livepanel.cli import main; sys.exit(main(sys.argv[1:]))",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    return Run(result.returncode, result.stdout, result.stderr)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with a module of its own types and one with a field livepanel
    cannot describe; the commands run from it."""
    (tmp_path / "clawapp_events.py").write_text(
        "import dataclasses\n"
        "from typing import Literal\n"
        "from livepanel import event_type\n\n"
        "@event_type('deploy.finished', collection='deploys', key='service')\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class DeployFinished:\n"
        "    service: str\n"
        "    outcome: Literal['ok', 'failed']\n",
        encoding="utf-8",
    )
    (tmp_path / "clawapp_odd.py").write_text(
        "import dataclasses\n"
        "from livepanel import event_type\n\n"
        "@event_type('upload.done')\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class UploadDone:\n"
        "    blob: bytes\n",
        encoding="utf-8",
    )
    return tmp_path


def test_schema_prints_the_events_document(project: Path) -> None:
    """{"events": {type: schema}} on stdout for the imported module's types, nothing else."""
    run = livepanel("schema", "--import", "clawapp_events", cwd=project)
    assert run.code == 0, run.err
    document = json.loads(run.out)
    assert list(document) == ["events"]
    assert list(document["events"]) == ["deploy.finished"]
    schema = document["events"]["deploy.finished"]
    assert schema["properties"]["outcome"] == {"enum": ["ok", "failed"]}
    assert schema["x-livepanel-state"]["collection"] == "deploys"


def test_without_import_the_builtin_types_are_described(project: Path) -> None:
    """No --import: the seed's five built-in types (SPEC section 11)."""
    run = livepanel("schema", cwd=project)
    assert run.code == 0, run.err
    assert sorted(json.loads(run.out)["events"]) == [
        "agent.status",
        "cron.executed",
        "gateway.status",
        "session.created",
        "session.killed",
    ]


def test_typescript_and_asyncapi_read_the_same_registry(project: Path) -> None:
    """The three commands describe the same types, --import repeatable."""
    both = ("--import", "clawapp_events", "--import", "livepanel.events.builtin")
    run = livepanel("typescript", *both, cwd=project)
    assert run.code == 0, run.err
    assert '"deploy.finished": DeployFinishedPayload;' in run.out
    assert '"session.created": SessionCreatedPayload;' in run.out
    assert 'deploys: Map<string, TypedEvent<"deploy.finished">>;' in run.out
    schema = json.loads(livepanel("schema", *both, cwd=project).out)
    from livepanel.schema import fingerprint

    assert f'SCHEMA_FINGERPRINT = "{fingerprint(schema)}"' in run.out
    run = livepanel(
        "asyncapi", *both, "--url", "wss://p.example/ws", "--security", "ticket", cwd=project
    )
    assert run.code == 0, run.err
    document = json.loads(run.out)
    assert "event.deploy.finished" in document["components"]["messages"]
    assert list(document["components"]["securitySchemes"]) == ["ticket"]


@pytest.mark.parametrize("command", ["schema", "typescript", "asyncapi"])
def test_an_unsupported_annotation_names_the_field_and_exits_2(project: Path, command: str) -> None:
    """A type that cannot be described: exit 2, the field named on stderr, nothing on stdout."""
    run = livepanel(command, "--import", "clawapp_odd", cwd=project)
    assert run.code == 2
    assert run.out == ""
    assert f"livepanel {command}: UploadDone.blob: livepanel cannot describe" in run.err


def test_a_module_that_does_not_import_is_named(project: Path) -> None:
    """--import of a missing module: exit 2 and which module."""
    run = livepanel("schema", "--import", "no_such_module_here", cwd=project)
    assert run.code == 2
    assert "cannot import no_such_module_here" in run.err


def test_asyncapi_refuses_a_url_that_is_not_a_websocket(project: Path) -> None:
    """--url must be ws:// or wss://."""
    run = livepanel("asyncapi", "--url", "http://p.example/ws", cwd=project)
    assert run.code == 2
    assert "ws://host/path" in run.err


@pytest.mark.usefixtures("registry")
@pytest.mark.parametrize("command", ["schema", "typescript", "asyncapi"])
def test_each_command_in_process_prints_one_document(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() itself, as the console script calls it: the document on stdout, exit 0."""
    from livepanel.cli import main
    from livepanel.events import _REGISTRY
    from livepanel.events import builtin as types

    _REGISTRY.clear()  # the five built-in types only, whatever other tests registered
    for cls in (
        types.SessionCreated,
        types.SessionKilled,
        types.AgentStatus,
        types.CronExecuted,
        types.GatewayStatus,
    ):
        _REGISTRY[cls.type] = cls
    assert main([command]) == 0
    out = capsys.readouterr().out
    if command == "typescript":
        assert out.startswith("// Generated by `livepanel typescript`")
    else:
        assert "session.created" in json.dumps(json.loads(out))
