"""What a payload or a client message carries, turned against whoever reads it, on real servers:
terminal escape sequences aimed at the operator running ``livepanel tail``, and a number that
overflows to infinity aimed at a strict JSON parser."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from livepanel import Broadcaster, LivePanelApp
from tests.client.helpers import USER, basic_auth
from tests.client.test_cli import PASSWORD_VAR, Tail
from tests.integration.helpers import (
    Serve,
    admin_only,
    expect_error,
    expect_frame,
    expect_welcome,
    open_ws,
)
from tests.servers import RunningServer, run_server

# retitle the window, clear the screen, an 8-bit CSI, DEL, a bell, a carriage return
HOSTILE = "nightly\x1b]0;pwned\x07\x1b[2J\x9b31m\x7f\rforged line"


@pytest.fixture
def broadcaster() -> Broadcaster:
    return Broadcaster()


@pytest.fixture
def tail_server(broadcaster: Broadcaster) -> Iterator[RunningServer]:
    with run_server(LivePanelApp(broadcaster, auth=basic_auth()), "uvicorn-wsproto") as running:
        yield running


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.close()


@pytest.mark.parametrize("mode", [[], ["--json"]])
def test_attack_terminal_escapes_in_a_payload_reach_tail_escaped(
    tail_server: RunningServer, broadcaster: Broadcaster, tails: list[Tail], mode: list[str]
) -> None:
    """A label holding ESC, C1, DEL, BEL and CR is printed with those as \\uXXXX: nothing the
    terminal acts on, one line per event, and --json output still parses to the payload."""
    tail = Tail(tail_server.ws_url + "/", "-u", USER, "--password-env", PASSWORD_VAR, *mode)
    tails.append(tail)
    tail.wait_stderr("connected to")
    broadcaster.publish(
        "session.created",
        {"sessionKey": "s1", "agentId": "a1", "kind": "cron", "label": HOSTILE},
    )
    broadcaster.publish("session.killed", {"sessionKey": "s1", "agentId": "a1"})
    first, second = tail.lines(2)
    for line in (first, second):
        body = line.removesuffix("\n")
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in body), repr(line)
    assert "\\u001b]0;pwned\\u0007" in first
    assert "session.killed" in second
    if mode:
        assert json.loads(first)["payload"]["label"] == HOSTILE


def test_attack_a_ping_with_1e999_is_an_invalid_message_never_a_pong_with_infinity(
    serve: Serve,
) -> None:
    """1e999 is well-formed JSON that overflows to infinity: the answer is invalid_message,
    never a pong echoing Infinity (which strict parsers reject), and the connection stays."""
    server = serve(LivePanelApp(Broadcaster(), auth=admin_only()))
    with open_ws(server) as ws:
        expect_welcome(ws)
        for number in ("1e999", "-1e999", "[1E400]"):
            ws.send('{"type": "ping", "payload": {"n": ' + number + "}}")
            expect_error(ws, "invalid_message")
        ws.send(json.dumps({"type": "ping", "payload": {"n": 1e308}}))
        assert expect_frame(ws, "pong")["payload"] == {"n": 1e308}


LEAKS = {
    "sk": "sk-proj-" + "Ab3" * 10,
    "ghp": "ghp_" + "x9Y" * 12,
    "pat": "github_pat_" + "11ABCDEFG0" * 3,
    "slack": "xoxp-1234567890-0987654321-" + "a1" * 8,
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6y",
    "bearer": "c2VjcmV0LWJlYXJlcg",
    "url": "hunter2-url-password",
}


def test_attack_token_shaped_values_in_command_output_never_reach_a_dashboard(
    serve: Serve,
) -> None:
    """A cron job that echoes its environment: every token shape in command, stdout and stderr
    arrives as [redacted], on each server; the rest of the text arrives intact."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    command = (
        f"curl -H 'Authorization: Bearer {LEAKS['bearer']}' "
        f"https://deploy:{LEAKS['url']}@git.example.com/repo.git"
    )
    shaped = [name for name in LEAKS if name not in ("bearer", "url")]  # shaped on their own
    stdout = "\n".join(f"{name.upper()}_VALUE={LEAKS[name]}" for name in shaped)
    with open_ws(server) as ws:
        expect_welcome(ws)
        broadcaster.publish(
            "cron.executed",
            {
                "jobId": "env",
                "command": command,
                "exitCode": 0,
                "durationMs": 5,
                "stdout": stdout,
                "stderr": f"warning: token {LEAKS['sk']} is deprecated",
            },
        )
        text = ws.recv(timeout=5)
    assert isinstance(text, str)
    for name, value in LEAKS.items():
        assert value not in text, name
    payload = json.loads(text)["payload"]
    assert payload["command"].startswith("curl -H 'Authorization: Bearer [redacted]' https://")
    assert "deploy:[redacted]@git.example.com" in payload["command"]
    assert payload["stderr"] == "warning: token [redacted] is deprecated"
    assert "AWS_VALUE=[redacted]" in payload["stdout"]
