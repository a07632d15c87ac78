"""The generated documents checked by the tools dashboards use: the official AsyncAPI parser,
and the TypeScript compiler under ``--strict`` with positive and negative cases.

The tools come from npm with a committed lock file (``tests/schema/node``; ``make typed``
installs them). Without them the tests skip, unless ``LIVEPANEL_REQUIRE_NPM=1`` (CI).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

import pytest

import livepanel.events.builtin as builtin  # registered before any test's registry snapshot
from livepanel import BasicAuth, LivePanelApp
from livepanel.events import _REGISTRY, event_type
from livepanel.schema import asyncapi_document, event_schemas, schema_document, typescript_module
from livepanel.tickets import TicketAuth, Tickets
from tests.requirements import unavailable

HERE = Path(__file__).resolve().parent
TOOLS = HERE / "node"
ROOT = HERE.parents[1]
CLIENT_TYPES = ROOT / "src" / "livepanel" / "static" / "livepanel.d.ts"


def tool(*parts: str) -> Path:
    path = TOOLS.joinpath("node_modules", *parts)
    if shutil.which("node") is None or not path.exists():
        unavailable(
            "npm",
            f"{path.relative_to(ROOT)} is missing: run `npm ci` in tests/schema/node (make typed)",
        )
    return path


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    port: int


def app_types() -> dict[str, type[Any]]:
    """The five built-in types and one of an app's own, nested dataclass and all."""
    types = {
        cls.type: cls
        for cls in (
            builtin.SessionCreated,
            builtin.SessionKilled,
            builtin.AgentStatus,
            builtin.CronExecuted,
            builtin.GatewayStatus,
        )
    }
    types["deploy.finished"] = Deploy
    return types


@dataclasses.dataclass(frozen=True)
class Deploy:
    """A deploy ended: event type `deploy.finished`."""

    service: str
    outcome: Literal["ok", "failed", "rolled_back"]
    hosts: list[Host]
    tags: dict[str, int]
    duration_ms: int | None = None


@pytest.fixture(autouse=True)
def _deploy_registered(registry: None) -> None:
    """The app's own type, registered for each test only (its state rule is in the schema)."""
    event_type("deploy.finished", collection="deploys", key="service")(Deploy)


def parse_asyncapi(document: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    tool("@asyncapi", "parser")
    source = tmp_path / "asyncapi.json"
    source.write_text(json.dumps(document), encoding="utf-8")
    result = subprocess.run(
        ["node", str(TOOLS / "validate-asyncapi.mjs"), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_the_asyncapi_document_parses_with_no_error(tmp_path: Path) -> None:
    """The official parser reads the document with 0 errors and sees every frame."""
    document = asyncapi_document(events=event_schemas(app_types()))
    report = parse_asyncapi(document, tmp_path)
    errors = [d for d in report["diagnostics"] if d["severity"] == 0]
    assert report["parsed"]
    assert errors == []
    assert set(report["messages"]) >= {
        "welcome",
        "ping",
        "pong",
        "error",
        "state",
        "batch",
        "clientPing",
        "ack",
        "subscribe",
        "event.session.created",
        "event.deploy.finished",
    }
    assert set(report["servers"]) == {"websocket", "eventStream"}
    assert set(report["operations"]) == {
        "receiveFrames",
        "sendClientMessages",
        "receiveEventStream",
    }
    assert set(document["components"]["securitySchemes"]) == {"basic", "ticket"}
    assert document["components"]["schemas"]["Host"]["required"] == ["name", "port"]


def test_an_apps_asyncapi_names_its_own_security(tmp_path: Path) -> None:
    """LivePanelApp.asyncapi(): HTTP Basic for BasicAuth, tickets for TicketAuth, none for None."""
    _REGISTRY.clear()  # the app's types only (other tests register odd ones); restored after
    _REGISTRY.update(app_types())
    basic = LivePanelApp(auth=BasicAuth(lambda user, password: True), shutdown_signals=())
    document = basic.asyncapi("wss://panel.example.com/live", title="ClawPanel")
    assert list(document["components"]["securitySchemes"]) == ["basic"]
    assert document["servers"]["websocket"]["protocol"] == "wss"
    assert document["servers"]["eventStream"]["protocol"] == "https"
    assert document["channels"]["websocket"]["address"] == "/live"
    diagnostics = parse_asyncapi(document, tmp_path)["diagnostics"]
    assert [d for d in diagnostics if d["severity"] == 0] == []
    tickets = LivePanelApp(auth=TicketAuth(Tickets("s" * 32)), shutdown_signals=())
    assert list(tickets.asyncapi()["components"]["securitySchemes"]) == ["ticket"]
    anonymous = LivePanelApp(auth=None, shutdown_signals=())
    assert anonymous.asyncapi()["servers"]["websocket"]["security"] == []
    with pytest.raises(ValueError, match="ws://host/path"):
        basic.asyncapi("http://panel.example.com/ws")


def compile_typescript(tmp_path: Path, usage: str) -> subprocess.CompletedProcess[str]:
    tsc = tool("typescript", "bin", "tsc")
    (tmp_path / "events.ts").write_text(
        typescript_module(schema_document(app_types())), encoding="utf-8"
    )
    (tmp_path / "usage.ts").write_text(usage, encoding="utf-8")
    config = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "target": "ES2022",
            "module": "ESNext",
            "moduleResolution": "bundler",
            "lib": ["ES2022", "DOM"],
            "types": [],
            "paths": {"livepanel": [str(CLIENT_TYPES)]},
        },
        "files": ["usage.ts", "events.ts"],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config), encoding="utf-8")
    return subprocess.run(
        ["node", str(tsc), "-p", str(tmp_path / "tsconfig.json"), "--pretty", "false"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


USAGE = (HERE / "typescript" / "usage.ts").read_text(encoding="utf-8")


def test_the_generated_module_types_a_dashboard_under_strict(tmp_path: Path) -> None:
    """Typed handlers compile, and each @ts-expect-error line is an error (or tsc says so)."""
    result = compile_typescript(tmp_path, USAGE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_negative_case_fails_for_its_own_line(tmp_path: Path) -> None:
    """Without the @ts-expect-error comments, exactly the lines under them fail."""
    lines = USAGE.splitlines()
    marked = [line.strip().startswith("// @ts-expect-error") for line in lines]
    expected = {n + 2 for n, mark in enumerate(marked) if mark}
    bare = "\n".join(
        "// (an error below)" if mark else line for mark, line in zip(marked, lines, strict=True)
    )
    result = compile_typescript(tmp_path, bare)
    failing = {
        int(m.group(1)) for m in re.finditer(r"usage\.ts\((\d+),\d+\): error", result.stdout)
    }
    assert len(expected) == 10
    assert failing == expected, result.stdout


def test_the_module_carries_the_fingerprint_the_server_sends() -> None:
    """SCHEMA_FINGERPRINT equals what welcome carries for the same registered types."""
    from livepanel.schema import fingerprint

    document = schema_document(app_types())
    module = typescript_module(document)
    assert f'export const SCHEMA_FINGERPRINT = "{fingerprint(document)}";' in module


def test_the_examples_generated_module_is_current() -> None:
    """examples/react/src/events.ts is what `livepanel typescript` prints for the built-in
    types today: regenerate it when they change."""
    example = ROOT / "examples" / "react" / "src" / "events.ts"
    assert example.read_text(encoding="utf-8") == typescript_module(
        schema_document(
            {name: cls for name, cls in app_types().items() if name != "deploy.finished"}
        )
    )


def test_welcome_carries_the_fingerprint_of_the_registered_types(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server's welcome names its types' fingerprint; a type added (the next deploy)
    changes it; a type that cannot be described leaves it out, logged, and welcome still works."""
    from livepanel.protocol import welcome_frame
    from livepanel.schema import current_fingerprint, fingerprint

    _REGISTRY.clear()
    _REGISTRY.update(app_types())
    before = current_fingerprint()
    assert before == fingerprint(schema_document(app_types()))
    frame = json.loads(welcome_frame("c1", 25.0, "e:0", schema=before))
    assert frame["payload"]["schema"] == before

    @event_type("deploy.started")
    @dataclasses.dataclass(frozen=True)
    class DeployStarted:
        service: str

    after = current_fingerprint()
    assert after is not None
    assert after != before

    @event_type("upload.done")
    @dataclasses.dataclass(frozen=True)
    class UploadDone:
        blob: bytes

    with caplog.at_level("WARNING", logger="livepanel"):
        assert current_fingerprint() is None
    assert "UploadDone.blob" in caplog.text
    assert "schema" not in json.loads(welcome_frame("c1", 25.0, "e:0"))["payload"]
