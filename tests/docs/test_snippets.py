"""Every code block of the docs (docs/**/*.md and README.md) is run or checked, none skipped.

- ``python``: all blocks of a page run in order in one namespace, compiled with
  top-level ``await`` allowed, in a fresh event loop in a worker thread;
  ``pycon``: run as doctests in that same namespace, their output compared.
- ``json``: each line, or else the whole block, parses; protocol.md's frames
  are also checked against the real protocol.
- ``console``: every ``livepanel`` command parses with the real argparse
  parser, every ``uvicorn`` command with uvicorn's own, and every other
  command is one this test knows how to check.
- ``js``: ``node --check`` as an ES module.
- ``http``, ``mermaid`` and ``ini`` (systemd): parsed and checked.
- ``caddyfile``: parsed by Caddy and run in front of uvicorn (Caddy from
  Debian; skipped without it unless ``LIVEPANEL_REQUIRE_CADDY=1``).
- ``nginx``: tests/deployment runs it in nginx.
- ``--8<--`` includes: a file under examples/ that a test runs.

A block of any other language fails ``test_every_block_is_checked``.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import builtins
import configparser
import contextlib
import doctest
import inspect
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import types
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import metadata
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
from websockets.sync.client import connect as ws_connect

import livepanel.broadcaster
import livepanel.events
from livepanel import BasicAuth, Broadcaster, LivePanelApp
from livepanel.cli import _parser as livepanel_parser
from livepanel.events import (
    AgentStatus,
    CronExecuted,
    Event,
    SessionCreated,
    SessionKilled,
    prepare_payload,
    registered_types,
)
from livepanel.protocol import ClientProtocol, parse_connect_query, parse_id
from tests.docs.markdown import DOCS, ROOT, Block, blocks, pages, shell_lines, simple_commands
from tests.requirements import unavailable
from tests.servers import free_port, run_server

USER, PASSWORD = "admin", "s3cret:pass"

PAGES = pages()
ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def blocks_of(*langs: str) -> list[Any]:
    return [
        pytest.param(b, id=b.where) for b in ALL_BLOCKS if b.lang in langs and b.include is None
    ]


CHECKED = {
    "python",
    "pycon",
    "json",
    "console",
    "bash",
    "sh",
    "shell",
    "js",
    "javascript",
    "http",
    "mermaid",
    "ini",
    "caddyfile",
    "nginx",
}


@pytest.mark.parametrize("block", [pytest.param(b, id=b.where) for b in ALL_BLOCKS])
def test_every_block_is_checked(block: Block) -> None:
    """A block is literal code in a language this test checks, or an include of a tested file."""
    if block.include is not None:
        return  # test_includes_are_tested_examples
    assert block.lang in CHECKED, (
        f"{block.where}: a ```{block.lang or '(no language)'} block that no test runs; "
        "make it runnable, or include a tested file from examples/ with --8<--"
    )


# --------------------------------------------------------------------------- includes

# Each included example, and a test file that runs it.
TESTED_BY = {
    "examples/quickstart/app.py": "tests/examples/test_quickstart.py",
    "examples/quickstart/index.html": "tests/examples/test_quickstart.py",
    "examples/fastapi_app.py": "tests/examples/test_examples.py",
    "examples/starlette_app.py": "tests/examples/test_examples.py",
    "examples/quart_app.py": "tests/examples/test_examples.py",
    "examples/litestar_app.py": "tests/examples/test_examples.py",
    "examples/django_asgi/asgi.py": "tests/examples/test_examples.py",
    "examples/django_asgi/views.py": "tests/examples/test_examples.py",
    "examples/react/src/Header.tsx": "examples/react/test/Header.test.tsx",
    "examples/react/src/App.tsx": "tests/browser/test_typed_dashboard.py",
    "examples/metrics/app.py": "tests/ops/test_metrics_example.py",
    "examples/tickets/app.py": "tests/tickets/test_example.py",
    "examples/metrics/alerts.yml": "tests/ops/test_recipes.py",
    "examples/metrics/kubernetes.yaml": "tests/ops/test_recipes.py",
    "examples/metrics/haproxy.cfg": "tests/ops/test_recipes.py",
    "examples/postgres/recipes.py": "tests/postgres/test_recipes.py",
    "examples/postgres/django_recipe.py": "tests/postgres/test_recipes.py",
}


@pytest.mark.parametrize(
    "block", [pytest.param(b, id=b.where) for b in ALL_BLOCKS if b.include is not None]
)
def test_includes_are_tested_examples(block: Block) -> None:
    """An included file exists under examples/, and a named test runs it."""
    path = block.include
    assert path is not None
    assert (ROOT / path).is_file(), f"{block.where}: {path} does not exist"
    assert path.startswith("examples/"), f"{block.where}: include files from examples/ only"
    test = TESTED_BY.get(path)
    assert test is not None, f"{block.where}: which test runs {path}? add it to TESTED_BY"
    source = (ROOT / test).read_text(encoding="utf-8")
    if path.startswith("examples/quickstart/"):
        assert 'examples" / "quickstart' in source
    elif path.startswith("examples/metrics/") and not path.endswith(".py"):
        assert f'EXAMPLES / "{Path(path).name}"' in source, f"{test} does not load {path}"
    elif path.endswith(".py"):
        module = path.removesuffix(".py").replace("/", ".")
        package = module.rsplit(".", 1)[0]
        assert module in source or f'"{package}' in source, f"{test} does not load {module}"
    else:
        stem = Path(path).stem
        assert f"/src/{stem}" in source or '"../src"' in source, f"{test} does not load {path}"
        assert re.search(rf"\b{stem}\b", source), f"{test} does not use {stem}"


# --------------------------------------------------------------------------- python


@dataclass
class PageRun:
    """What running one page's Python blocks left behind."""

    output: str
    namespace: dict[str, Any]


Check = Callable[[PageRun], Awaitable[None]]


async def no_check(run: PageRun) -> None:
    """Running without an error is the test."""


def _run_blocks(page: Path, code_blocks: list[Block], subs: dict[str, str], check: Check) -> None:
    """Run ``code_blocks`` in order in one module namespace, in a fresh loop, in this thread.

    Blocks with top-level ``await`` run in the loop; the others run outside it,
    so that a block may call ``asyncio.run()`` as a script would. Then
    ``check`` runs in the loop, with what the blocks printed and defined.
    """
    name = "docs_" + re.sub(r"\W", "_", str(page.relative_to(ROOT)).removesuffix(".md"))
    module = types.ModuleType(name)
    namespace: dict[str, Any] = module.__dict__
    namespace["__builtins__"] = builtins
    sys.modules[name] = module  # dataclasses and typing.get_type_hints look classes up here
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            for block in code_blocks:
                code = block.code
                for old, new in subs.items():
                    code = code.replace(old, new)
                filename = f"{block.where} ({block.lang})"
                if block.lang == "pycon":
                    _run_doctest(code, namespace, filename, block.line)
                    continue
                compiled = compile(
                    code, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
                )
                result = eval(compiled, namespace)
                if inspect.iscoroutine(result):
                    loop.run_until_complete(asyncio.wait_for(result, 30))
        loop.run_until_complete(check(PageRun(output.getvalue(), namespace)))
    finally:
        loop.run_until_complete(_close_broadcasters(namespace, loop))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)
        sys.modules.pop(name, None)


def _run_doctest(code: str, namespace: dict[str, Any], filename: str, line: int) -> None:
    test = doctest.DocTestParser().get_doctest(code, namespace, filename, filename, line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS, verbose=False)
    report = io.StringIO()
    runner.run(test, out=report.write, clear_globs=False)
    assert runner.failures == 0, report.getvalue()


async def _close_broadcasters(namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
    """Close what the snippets started in this loop: their broadcasters and the default one."""
    found = [v for v in namespace.values() if isinstance(v, Broadcaster)]
    default = livepanel.broadcaster._default
    if default is not None:
        found.append(default)
    for broadcaster in found:
        await broadcaster.close()


def run_page(page: Path, subs: dict[str, str] | None = None, check: Check = no_check) -> None:
    """Run the page's python and pycon blocks in a worker thread, never in the main thread."""
    code_blocks = [b for b in blocks(page) if b.lang in ("python", "pycon") and b.include is None]
    registry = dict(livepanel.events._REGISTRY)
    rules = dict(livepanel.events._STATE_RULES)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            _run_blocks(page, code_blocks, subs or {}, check)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=target, name=f"docs:{page.name}")
    worker.start()
    worker.join(90)
    # event types registered by a page are that page's own: other tests register theirs
    livepanel.events._REGISTRY.clear()
    livepanel.events._REGISTRY.update(registry)
    livepanel.events._STATE_RULES.clear()
    livepanel.events._STATE_RULES.update(rules)
    assert not worker.is_alive(), f"{page_id(page)}: the snippets did not finish in 90 s"
    if failure:
        raise failure[0]


PYTHON_PAGES = [
    pytest.param(page, id=page_id(page))
    for page in PAGES
    if any(b.lang in ("python", "pycon") and b.include is None for b in blocks(page))
]


@pytest.fixture
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_USERNAME", USER)
    monkeypatch.setenv("DASHBOARD_PASSWORD", PASSWORD)
    monkeypatch.delenv("LIVEPANEL_BACKEND_URL", raising=False)


@pytest.mark.usefixtures("_credentials")
@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_python_blocks_run(page: Path) -> None:
    """The page's Python blocks run, in order, in one namespace; pycon blocks as doctests.

    Where a page's snippets print or define something worth checking, a page
    check below asserts it; where they need a server, one is started first.
    """
    with PAGE_SETUPS.get(page.name, plain_page)() as (subs, check):
        run_page(page, subs, check)


@contextlib.contextmanager
def plain_page() -> Iterator[tuple[dict[str, str], Check]]:
    yield {}, no_check


def checked_by(check: Check) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    @contextlib.contextmanager
    def setup() -> Iterator[tuple[dict[str, str], Check]]:
        yield {}, check

    return setup


async def check_concepts_page(run: PageRun) -> None:
    """The ids look like ids; the subscription replays nothing, then sees the two session events;
    the transport example's writer sends welcome and the event, then ends as it was closed."""
    lines = run.output.splitlines()
    parse_id(lines[0])
    assert lines[1:] == [
        "session.created s2",
        "session.killed s2",
        "2 CloseReason.GOING_AWAY",
    ], run.output


async def check_authentication_page(run: PageRun) -> None:
    """The verifier and the cookie authenticator accept what they should, and nothing else."""
    verify = run.namespace["verify"]
    assert await verify("alice", "wonderland") == "alice"
    assert await verify("alice", "Wonderland") is None
    assert await verify("mallory", "wonderland") is None
    auth = run.namespace["CookieAuth"]()
    cookie = run.namespace["session_cookie"]

    def scope(value: str) -> dict[str, Any]:
        return {"headers": [(b"cookie", f"theme=dark; session={value}".encode())]}

    assert await auth(scope(cookie("alice"))) == "alice"
    assert await auth(scope(cookie("alice", ttl=-1))) is None
    assert await auth(scope(cookie("alice").replace("alice", "admin"))) is None
    assert await auth({"headers": []}) is None


# ---- docs/client.md: a real endpoint, events published from a thread, output checked


@contextlib.contextmanager
def client_page_server() -> Iterator[tuple[dict[str, str], Check]]:
    """An endpoint with a steady, bounded stream of session, agent and cron events.

    The page's ``ws://localhost:8000`` becomes this server's URL.
    """
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=BasicAuth.from_env(), heartbeat_interval=5)
    stop = threading.Event()

    def publish() -> None:
        deadline = time.monotonic() + 60
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            if app.connection_count:
                n += 1
                key = f"s{n}"
                for payload in (
                    SessionCreated(session_key=key, agent_id="a1", kind="direct"),
                    AgentStatus(agent_id="a1", status="running", active_session_count=1),
                    CronExecuted(job_id="backup", command="tar", exit_code=n % 2, duration_ms=5),
                    SessionKilled(session_key=key, agent_id="a1"),
                ):
                    broadcaster.publish(payload)
            stop.wait(0.05)

    with run_server(app, "uvicorn-wsproto", lifespan=True) as server:
        publisher = threading.Thread(target=publish, name="docs:publisher", daemon=True)
        publisher.start()
        try:
            yield {"ws://localhost:8000": server.ws_url}, check_client_page
        finally:
            stop.set()
            publisher.join(5)


async def check_client_page(run: PageRun) -> None:
    """Each snippet printed what the page says it does."""
    lines = run.output.splitlines()
    # "Receiving events": ids, the filtered types only, until the session ended
    received = [line.split(" ", 2) for line in lines if re.match(r"\w+:\d+ \w+\.\w+ ", line)]
    assert received, run.output
    for event_id, kind, _ in received:
        parse_id(event_id)
        assert kind in ("session.created", "session.killed", "agent.status"), run.output
    assert received[-1][1] == "session.killed"
    # "While connected": the new filter's events, acknowledged, until a failed run
    assert re.search(r"^cron\.executed backup exitCode=1$", run.output, re.M), run.output
    # "When the server cannot resume": the gap reported, then live until every session ended
    assert "refetching: cannot resume after '3f9a1c2e:41'" in run.output
    assert run.namespace["sessions"] == {}


async def check_testing_page(run: PageRun) -> None:
    """The timeout example printed its message, and each ``test_*`` the page defines passes
    when run as pytest would, with the ``livepanel_events`` fixture."""
    from livepanel.testing import capture_events

    assert "receive_event: no 'cron.*' event within 0.2 s; skipped: ['welcome']" in run.output
    tests = [value for name, value in run.namespace.items() if name.startswith("test_")]
    assert tests, "docs/testing.md defines no test function"

    def with_fixture(test: Callable[..., None]) -> None:
        assert list(inspect.signature(test).parameters) == ["livepanel_events"], test
        with capture_events() as events:
            test(events)

    for test in tests:
        await asyncio.to_thread(with_fixture, test)


PAGE_SETUPS: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "concepts.md": checked_by(check_concepts_page),
    "authentication.md": checked_by(check_authentication_page),
    "client.md": client_page_server,
    "testing.md": checked_by(check_testing_page),
}


# --------------------------------------------------------------------------- json


def _frames(block: Block) -> list[Any]:
    """Each line parses (one frame per line), or else the whole block does."""
    lines = [line for line in block.code.splitlines() if line.strip()]
    try:
        return [json.loads(line) for line in lines]
    except ValueError:
        pass
    try:
        return [json.loads(block.code)]
    except ValueError as exc:
        raise AssertionError(f"{block.where}: not JSON, by line or as a whole: {exc}") from None


@pytest.mark.parametrize("block", blocks_of("json"))
def test_json_blocks_parse(block: Block) -> None:
    """A json block is JSON: one value per line, or one value."""
    _frames(block)


TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# the JSON body of a refused handshake: {"error": <code>, "message": ...}
DENIAL_CODES = {
    "tls_required",
    "origin_not_allowed",
    "too_many_failures",
    "unauthorized",
    "forbidden",
    "too_many_connections",
    "over_rate",
    "shutting_down",
    "unavailable",
    "upgrade_required",
}
ERROR_CODES = {
    "invalid_json",
    "invalid_message",
    "unknown_type",
    "rate_limited",
    "resume_unavailable",
}


def check_frame(frame: Any, where: str) -> None:
    """One wire frame shown in the docs is a frame livepanel sends or accepts."""
    assert isinstance(frame, dict), f"{where}: a frame is a JSON object"
    kind = frame.get("type")
    payload = frame.get("payload", {})
    if "timestamp" in frame:
        assert TIMESTAMP.fullmatch(frame["timestamp"]), f"{where}: timestamp {frame['timestamp']}"
    if kind in registered_types():
        parse_id(frame["id"])
        assert prepare_payload(kind, payload) == payload, f"{where}: {kind} payload"
        Event.from_dict(frame)
    elif kind == "welcome":
        assert set(payload) == {"connectionId", "heartbeatInterval", "lastEventId", "server"}
        parse_id(payload["lastEventId"])
        assert payload["server"].startswith("livepanel/")
    elif kind == "error":
        assert set(payload) == {"code", "message"}
        assert payload["code"] in ERROR_CODES, f"{where}: error code {payload['code']}"
    elif kind in ("ack", "subscribe"):
        actions = ClientProtocol().receive_text(json.dumps(frame))
        names = [type(a).__name__ for a in actions]
        assert names == [kind.capitalize()], f"{where}: {frame} gives {actions}"
    elif kind in ("ping", "pong"):
        assert isinstance(payload, dict)
    elif kind == "state":
        assert set(payload) == {"lastEventId", "collections", "types"}, f"{where}: {payload}"
        parse_id(payload["lastEventId"])
        for name, collection in payload["collections"].items():
            assert set(collection) == {"key", "keep", "entries"}, f"{where}: {name}"
            for entry in collection["entries"]:
                check_frame(entry, f"{where}: {name}")
        for rule in payload["types"].values():
            assert set(rule) == {"collection", "removes"}, f"{where}: {rule}"
            assert rule["collection"] in payload["collections"], f"{where}: {rule}"
    else:
        raise AssertionError(f"{where}: unknown frame type {kind!r}")


@pytest.mark.parametrize("block", blocks_of("json"))
def test_frames_in_the_docs_are_real_frames(block: Block) -> None:
    """Every frame shown (``{"type": ...}``) has the shape the server sends or accepts."""
    for frame in _frames(block):
        if isinstance(frame, dict) and "type" in frame:
            check_frame(frame, block.where)
        elif isinstance(frame, dict) and set(frame) == {"error", "message"}:
            assert frame["error"] in DENIAL_CODES, f"{block.where}: {frame}"
        elif block.page.name == "protocol.md":
            raise AssertionError(f"{block.where}: protocol.md shows frames only: {frame}")


# --------------------------------------------------------------------------- console

EXTRAS = set(metadata("livepanel").get_all("Provides-Extra") or ())
MAKE_TARGETS = set(
    re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M)
)
APP_TARGET = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\(\))?")
# commands these docs use whose arguments need no more than being shown
PLAIN_COMMANDS = {"jq", "cd", ".", "source", "npm", "curl", "python", "python3"}


def check_command(argv: list[str], where: str) -> None:
    program, args = argv[0], argv[1:]
    if program == "livepanel":
        try:
            parsed = livepanel_parser().parse_args(args)
        except SystemExit:
            raise AssertionError(f"{where}: livepanel does not accept {shlex.join(args)}") from None
        assert parsed.command is not None, f"{where}: livepanel without a command"
    elif program == "uvicorn":
        from uvicorn.main import main as uvicorn_command

        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                context = uvicorn_command.make_context("uvicorn", list(args))
            except BaseException as exc:
                raise AssertionError(
                    f"{where}: uvicorn {shlex.join(args)}: {err.getvalue()}"
                ) from exc
        check_app_target(context.params["app"], where)
    elif program in ("gunicorn", "hypercorn"):
        targets = [a for a in args if APP_TARGET.fullmatch(a)]
        assert len(targets) == 1, f"{where}: {program} needs one module:app target"
        check_app_target(targets[0], where)
    elif program == "granian":
        assert "--interface" in args
        assert args[args.index("--interface") + 1] == "asgi"
        check_app_target(next(a for a in args if APP_TARGET.fullmatch(a)), where)
    elif program == "pip":
        check_pip(args, where)
    elif program == "make":
        assert args, f"{where}: make without a target"
        assert set(args) <= MAKE_TARGETS, f"{where}: make {args}: no such target"
    elif program == "node":
        assert args[:1] == ["--test"], f"{where}: node {args}"
    elif program == "psql":
        # the GRANT lines of postgres.md are run by tests/postgres/test_postgres_backend.py
        assert args, f"{where}: psql without a command"
    elif program == "redis-cli":
        # the ACL SETUSER line of redis-production.md is run by tests/redis/test_redis_tls_acl.py
        assert args, f"{where}: redis-cli without a command"
    else:
        assert program in PLAIN_COMMANDS, f"{where}: a command no test checks: {program}"


def check_app_target(target: str, where: str) -> None:
    """``module:attribute``; the repository's own examples must really import."""
    assert APP_TARGET.fullmatch(target), f"{where}: {target!r} is not a module:app target"
    module, _, attribute = target.partition(":")
    if module.startswith("examples."):
        __import__(module)
        assert hasattr(sys.modules[module], attribute.removesuffix("()")), f"{where}: {target}"


def check_pip(args: list[str], where: str) -> None:
    assert args[:1] == ["install"], f"{where}: pip {args}"
    extras = EXTRAS
    for requirement in args[1:]:
        if requirement.startswith("-") or requirement == ".":
            continue
        if requirement.startswith("dist/"):  # the wheel make dist builds, of this version
            from livepanel.__about__ import __version__

            wheel = f"dist/livepanel-{__version__}-py3-none-any.whl"
            assert requirement == wheel, f"{where}: {requirement} is not {wheel}"
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[([\w,-]+)\])?", requirement)
        assert match, f"{where}: not a requirement: {requirement}"
        if match[1] == "livepanel" and match[2]:
            assert set(match[2].split(",")) <= extras, f"{where}: no extra {match[2]}"


@pytest.mark.usefixtures("_credentials")
@pytest.mark.parametrize("block", blocks_of("console", "bash", "sh", "shell"))
def test_console_commands_are_real(block: Block) -> None:
    """Every command of a console block is one the real parsers accept."""
    commands = [c for line in shell_lines(block.code) for c in simple_commands(line)]
    assert commands, f"{block.where}: a console block without a command"
    for command in commands:
        check_command(command.argv, f"{block.where}: {command.source}")


def test_the_checks_refuse_what_the_parsers_refuse() -> None:
    """The console check itself fails on a bad livepanel or uvicorn command."""
    with pytest.raises(AssertionError):
        check_command(["livepanel", "tail"], "self-test")
    with pytest.raises(AssertionError):
        check_command(["livepanel", "tail", "ws://x/ws", "--no-such-option"], "self-test")
    with pytest.raises(AssertionError):
        check_command(["uvicorn", "app:app", "--no-such-option"], "self-test")
    with pytest.raises(AssertionError):
        check_command(["uvicorn", "not a target"], "self-test")
    with pytest.raises(AssertionError):
        check_command(["pip", "install", "livepanel[nope]"], "self-test")


# --------------------------------------------------------------------------- js

NODE = shutil.which("node")


@pytest.mark.parametrize("block", blocks_of("js", "javascript"))
def test_javascript_blocks_are_valid_modules(block: Block, tmp_path: Path) -> None:
    """``node --check`` accepts the block as an ES module."""
    assert NODE is not None, "node is needed (make test runs node --test as well)"
    source = tmp_path / "snippet.mjs"
    source.write_text(block.code, encoding="utf-8")
    checked = subprocess.run([NODE, "--check", str(source)], capture_output=True, text=True)
    assert checked.returncode == 0, f"{block.where}:\n{checked.stderr}"


# --------------------------------------------------------------------------- the rest


@pytest.mark.parametrize("block", blocks_of("http"))
def test_http_requests_are_well_formed(block: Block) -> None:
    """An HTTP request head parses, and its livepanel parts mean what they say."""
    connection = h11.Connection(h11.SERVER)
    head = block.code.replace("\n", "\r\n") + "\r\n"
    connection.receive_data(head.encode("ascii"))
    request = connection.next_event()
    assert isinstance(request, h11.Request), f"{block.where}: {request}"
    target = request.target.decode()
    _path, _, query = target.partition("?")
    options = parse_connect_query(query)
    assert options.error is None, f"{block.where}: {options.error}"
    headers = {name.decode(): value.decode() for name, value in request.headers}
    # a WebSocket handshake, or a request for the Server-Sent Events stream
    stream = "text/event-stream" in headers.get("accept", "")
    assert stream or headers.get("upgrade", "").lower() == "websocket"
    from livepanel.auth import parse_basic_authorization

    if "authorization" in headers:
        assert parse_basic_authorization(headers["authorization"]) is not None


_MERMAID_LINE = re.compile(
    r"(sequenceDiagram"
    r"|participant \w+( as .+)?"
    r"|\w+ ?(->>|-->>|->|-->|-x|--x|-\))\+?-? ?\w+: .+"
    r"|Note (over|left of|right of) \w+(, ?\w+)?: .+"
    r"|(loop|alt|else|opt|par|and|rect|critical|break)( .*)?"
    r"|end"
    r"|%%.*)"
)


@pytest.mark.parametrize("block", blocks_of("mermaid"))
def test_mermaid_diagrams_are_sequence_diagrams(block: Block) -> None:
    """A mermaid block is a sequence diagram whose every line has the syntax's shape."""
    lines = [line.strip() for line in block.code.splitlines() if line.strip()]
    assert lines[0] == "sequenceDiagram", block.where
    participants = set()
    for line in lines:
        assert _MERMAID_LINE.fullmatch(line), f"{block.where}: not mermaid: {line}"
        if line.startswith("participant "):
            participants.add(line.split()[1])
    for line in lines:
        if match := re.match(r"(\w+) ?(?:->>|-->>|->|-->|-x|--x|-\))\+?-? ?(\w+):", line):
            assert set(match.groups()) <= participants, f"{block.where}: {line}"


@pytest.mark.parametrize("block", blocks_of("ini"))
def test_systemd_units_run_a_real_command(block: Block) -> None:
    """A unit file parses, and its ExecStart is a uvicorn command uvicorn accepts."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment, method-assign]
    unit.read_string(re.sub(r"\\\n\s*", " ", block.code))
    assert {"Unit", "Service", "Install"} <= set(unit.sections()), block.where
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0].endswith("/bin/uvicorn"), f"{block.where}: ExecStart {argv[0]}"
    check_command(["uvicorn", *argv[1:]], f"{block.where}: ExecStart")


@pytest.mark.parametrize("block", blocks_of("caddyfile"))
def test_caddyfiles_proxy_to_the_app(block: Block) -> None:
    """A Caddyfile site block reverse-proxies to the address the docs' servers listen on."""
    caddy = shutil.which("caddy")
    if caddy is not None:  # Caddy's own parser, where it is installed
        adapted = subprocess.run(
            [caddy, "adapt", "--adapter", "caddyfile", "--config", "/dev/stdin"],
            input=block.code,
            capture_output=True,
            text=True,
        )
        assert adapted.returncode == 0, f"{block.where}:\n{adapted.stderr}"
    lines = [line.strip() for line in block.code.splitlines() if line.strip()]
    assert re.fullmatch(r"[\w.-]+ \{", lines[0]), block.where
    assert lines[-1] == "}", block.where
    assert "reverse_proxy 127.0.0.1:8000" in lines, block.where


def caddy_binary() -> str:
    found = shutil.which("caddy")
    if found is None:
        unavailable("caddy", "caddy is not installed (apt-get install caddy)")
    return found


@pytest.mark.parametrize("block", blocks_of("caddyfile"))
def test_the_caddy_recipe_proxies_websockets(block: Block, tmp_path: Path) -> None:
    """The Caddyfile, run in Caddy in front of uvicorn: an event arrives through it, and a
    refused handshake comes back as the endpoint's own 401."""
    caddy = caddy_binary()
    listen = free_port()
    broadcaster = Broadcaster()
    app = LivePanelApp(
        broadcaster, auth=BasicAuth(lambda u, p: (u, p) == ("admin", "secret")), shutdown_signals=()
    )
    with run_server(app, "uvicorn-wsproto", lifespan=True) as upstream:
        site = block.code.replace(
            "reverse_proxy 127.0.0.1:8000", f"reverse_proxy {upstream.host}:{upstream.port}"
        )
        site = re.sub(r"^[\w.-]+ \{", f"http://127.0.0.1:{listen} {{", site, count=1)
        config = tmp_path / "Caddyfile"
        config.write_text("{\n\tadmin off\n\tauto_https off\n}\n\n" + site, encoding="utf-8")
        log = (tmp_path / "caddy.log").open("wb")
        process = subprocess.Popen(
            [caddy, "run", "--config", str(config), "--adapter", "caddyfile"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)},
        )
        try:
            url = f"127.0.0.1:{listen}"
            deadline = time.monotonic() + 15
            while True:
                with contextlib.suppress(httpx.TransportError):
                    refused = httpx.get(f"http://{url}/ws", timeout=1)
                    break
                assert time.monotonic() < deadline, (tmp_path / "caddy.log").read_text()
                assert process.poll() is None, (tmp_path / "caddy.log").read_text()
                time.sleep(0.1)
            assert refused.status_code == 401
            assert refused.json()["error"] == "unauthorized"
            token = base64.b64encode(b"admin:secret").decode()
            with ws_connect(
                f"ws://{url}/ws", additional_headers={"Authorization": f"Basic {token}"}
            ) as ws:
                assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
                broadcaster.publish(SessionKilled(session_key="s1", agent_id="a1"))
                event = json.loads(ws.recv(timeout=5))
                assert (event["type"], event["payload"]["sessionKey"]) == ("session.killed", "s1")
        finally:
            process.terminate()
            process.wait(10)
            log.close()


def test_the_nginx_recipe_is_the_one_tests_deployment_runs() -> None:
    """nginx blocks: only docs/deployment.md has one, and tests/deployment runs it from there."""
    holders = {b.page.name for b in ALL_BLOCKS if b.lang == "nginx"}
    assert holders == {"deployment.md"}
    runner = (ROOT / "tests" / "deployment" / "test_nginx.py").read_text(encoding="utf-8")
    assert '"docs" / "deployment.md"' in runner
    assert "```nginx" in runner


def test_the_docs_checked_here_are_the_docs_mkdocs_builds() -> None:
    """Every page of the site's nav is one of the pages this module reads."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for name in re.findall(r"([\w/-]+\.md)$", nav, flags=re.M):
        assert (DOCS / name) in PAGES, name


# ---------------------------------------------------------------------- protocol.md vs the code


def _table_rows(page: Path, heading: str) -> list[list[str]]:
    """The body rows of the first table after ``heading``, cells stripped of backticks."""
    text = page.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    rows: list[list[str]] = []
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            cells = [c.strip().replace("`", "") for c in line.strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the header


def _source(*names: str) -> str:
    return "\n".join(
        (ROOT / "src" / "livepanel" / name).read_text(encoding="utf-8") for name in names
    )


def test_protocol_md_lists_every_refusal_the_endpoint_sends() -> None:
    """The refusal table holds exactly the (status, code) pairs handshake.py defines, 426
    aside."""
    documented = {
        (int(re.match(r"\d+", status)[0]), code)  # type: ignore[index]
        for _, status, code in _table_rows(DOCS / "protocol.md", "### Refusals")
    }
    sent = {
        (int(status), code)
        for status, code in re.findall(r'\bDenial\(\s*(\d+),\s*"(\w+)"', _source("handshake.py"))
    }
    assert documented | {(426, "upgrade_required")} == sent
    assert {code for _, code in sent} == DENIAL_CODES


def test_protocol_md_lists_every_error_code_the_server_sends() -> None:
    """The error table holds exactly the codes of the error frames the server sends."""
    documented = {row[0] for row in _table_rows(DOCS / "protocol.md", "An `error` frame leaves")}
    code = _source("protocol.py", "transports.py", "broadcaster.py", "connection.py", "resume.py")
    assert set(re.findall(r'error_frame\(\s*"(\w+)"', code)) <= documented == ERROR_CODES
    for name in ERROR_CODES:
        assert f'"{name}"' in code, f"protocol.md documents {name}, which the server never sends"


def test_protocol_md_lists_every_close_code_the_server_uses() -> None:
    """The close-code table holds 1001, 1008, 1009, 1011, 1012 and 1013, the codes protocol.py
    defines."""
    documented = {int(row[0]) for row in _table_rows(DOCS / "protocol.md", "The server closes")}
    from livepanel import protocol

    defined = {v for k, v in vars(protocol).items() if k.startswith("CLOSE_")}
    assert documented == defined - {protocol.CLOSE_NORMAL}
