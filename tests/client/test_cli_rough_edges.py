"""What a newcomer hit with the command line: each rough edge, from a real process where it
crosses a socket."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from livepanel import Broadcaster, LivePanelMiddleware
from livepanel.cli import main
from livepanel.client.endpoint import Endpoint
from tests.client.helpers import PASSWORD, USER, basic_auth
from tests.client.test_cli import PASSWORD_VAR, Tail
from tests.servers import RunningServer, run_server


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """The endpoint at /ws of a site whose other pages answer 200."""

    def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("the site's home page")

    site = Starlette(routes=[Route("/", home)])
    app = LivePanelMiddleware(site, path="/ws", broadcaster=Broadcaster(), auth=basic_auth())
    with run_server(app, "uvicorn-wsproto") as running:
        yield running


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.close()


def test_a_password_prompt_without_a_terminal_is_a_clear_usage_error() -> None:
    """-u without --password-env, stdin not a terminal (CI, a pipe): exit 2 naming the ways
    to give the password, no EOFError traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "livepanel", "tail", "ws://127.0.0.1:9/ws", "-u", USER],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--password-env VAR or --password-stdin" in done.stderr
    assert "Traceback" not in done.stderr


def test_password_stdin_reads_the_first_line(server: RunningServer) -> None:
    """--password-stdin: the password piped in logs in; it never shows on stderr."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "livepanel", "tail", f"{server.ws_url}/ws"),
            *("-u", USER, "--password-stdin"),
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdin is not None
        assert proc.stderr is not None
        proc.stdin.write(PASSWORD + "\n")
        proc.stdin.close()
        line = proc.stderr.readline()
        assert "connected to" in line, line
        assert PASSWORD not in line
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_an_http_url_is_taken_as_its_websocket_url(
    server: RunningServer, tails: list[Tail]
) -> None:
    """http://host/ws, as livepanel.js accepts it, connects as ws://host/ws."""
    http_url = server.ws_url.replace("ws://", "http://", 1) + "/ws"
    tail = Tail(http_url, "-u", USER, "--password-env", PASSWORD_VAR)
    tails.append(tail)
    tail.wait_stderr("connected to")


def test_a_url_without_the_endpoint_path_says_so(server: RunningServer, tails: list[Tail]) -> None:
    """ws://host:port with the path forgotten: the site's page answers 200, and tail says
    there is no livepanel endpoint at that path (exit 1), not merely "answered 200"."""
    tail = Tail(server.ws_url, "-u", USER, "--password-env", PASSWORD_VAR)
    tails.append(tail)
    code, stderr = tail.finish(timeout=30)
    assert code == 1
    assert "no livepanel endpoint at this path" in stderr
    assert "Traceback" not in stderr


def test_other_schemes_are_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """ftp:// is neither: a usage error naming the expected schemes."""
    assert main(["tail", "ftp://localhost/ws"]) == 2
    assert "ws:// or wss://" in capsys.readouterr().err


def test_top_once_exits_1_on_a_url_that_is_not_a_health_check(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The endpoint itself answers JSON 401: not a health report, so top --once exits 1."""
    http_url = server.ws_url.replace("ws://", "http://", 1) + "/ws"
    assert main(["top", "--once", http_url]) == 1
    out = capsys.readouterr().out
    assert "not a livepanel health report (HTTP 401)" in out
    assert "backend None" not in out


def test_a_ticket_refusal_says_what_the_server_said() -> None:
    """A 401 that carries a reason (an expired ticket) shows it, without talking of passwords."""
    endpoint = Endpoint.parse("ws://127.0.0.1:8000/ws?ticket=t")
    body = b'{"error": "unauthorized", "message": "the ticket has expired or was used"}'
    message = str(endpoint.refusal(401, body))
    assert "the ticket has expired or was used" in message
    assert "password" not in message


def test_a_bare_401_still_hints_at_credentials() -> None:
    """No reason in the body: the hint names both kinds of credential."""
    message = str(Endpoint.parse("ws://127.0.0.1:8000/ws").refusal(401, b""))
    assert "check the username and password, or the ticket" in message
