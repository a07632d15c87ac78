"""`livepanel tail` as a real subprocess against a real server, and the command's arguments."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import IO, Any

import pytest

from livepanel import Broadcaster, Event, LivePanelApp
from livepanel.cli import main, summarize
from tests.client.helpers import PASSWORD, USER, basic_auth
from tests.servers import RunningServer, run_server

PASSWORD_VAR = "LIVEPANEL_TEST_PASSWORD"


class Tail:
    """``python -m livepanel tail ...`` with its stdout and stderr read line by line."""

    def __init__(self, *args: str, password: str | None = PASSWORD) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if password is not None:
            env[PASSWORD_VAR] = password
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livepanel", "tail", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        self.stderr_seen: list[str] = []
        self.pumps = [
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        for pump in self.pumps:
            pump.start()

    @staticmethod
    def _pump(stream: IO[str] | None, sink: queue.Queue[str]) -> None:
        assert stream is not None
        for line in stream:
            sink.put(line)

    def lines(self, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        return [
            self.stdout.get(timeout=max(0.01, deadline - time.monotonic())) for _ in range(count)
        ]

    def wait_stderr(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.stderr_seen):
            try:
                self.stderr_seen.append(
                    self.stderr.get(timeout=max(0.01, deadline - time.monotonic()))
                )
            except queue.Empty:
                raise AssertionError(f"{text!r} not on stderr: {self.stderr_seen}") from None

    def finish(self, timeout: float = 10.0) -> tuple[int, str]:
        """Wait for the exit; return the exit code and all of stderr."""
        code = self.proc.wait(timeout)
        for pump in self.pumps:  # they end at the pipes' end of file
            pump.join(timeout)
        while not self.stderr.empty():
            self.stderr_seen.append(self.stderr.get_nowait())
        return code, "".join(self.stderr_seen)

    def close(self) -> None:
        """Kill the process if it still runs, and release its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for pump in self.pumps:
            pump.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def broadcaster() -> Broadcaster:
    return Broadcaster()


@pytest.fixture
def server(broadcaster: Broadcaster) -> Iterator[RunningServer]:
    with run_server(LivePanelApp(broadcaster, auth=basic_auth()), "uvicorn-wsproto") as running:
        yield running


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.close()


def test_tail_json_prints_each_event_as_its_wire_object(
    server: RunningServer, broadcaster: Broadcaster, tails: list[Tail]
) -> None:
    """--json output, parsed back line by line, equals the published events."""
    tail = Tail(server.ws_url + "/", "-u", USER, "--password-env", PASSWORD_VAR, "--json")
    tails.append(tail)
    tail.wait_stderr("connected to")
    published = [
        broadcaster.publish(
            "session.created", {"sessionKey": "s1", "agentId": "a1", "kind": "cron"}
        ),
        broadcaster.publish(
            "cron.executed",
            {"jobId": "j", "command": "ls -l", "exitCode": 0, "durationMs": 3, "stdout": "a\nb"},
        ),
        broadcaster.publish("session.killed", {"sessionKey": "s1", "agentId": "a1"}),
    ]
    lines = tail.lines(3)
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in published]
    assert [Event.from_json(line) for line in lines] == published


def test_tail_prints_one_readable_line_per_event(
    server: RunningServer, broadcaster: Broadcaster, tails: list[Tail]
) -> None:
    """Without --json: time, type and a short payload summary on one line."""
    tail = Tail(
        server.ws_url + "/", "-u", USER, "--password-env", PASSWORD_VAR, "--types", "session.*"
    )
    tails.append(tail)
    tail.wait_stderr("connected to")
    broadcaster.publish(
        "agent.status", {"agentId": "a1", "status": "idle", "activeSessionCount": 0}
    )
    event = broadcaster.publish("session.killed", {"sessionKey": "s1", "agentId": "a1"})
    (line,) = tail.lines(1)
    stamp = event.to_dict()["timestamp"]
    assert line == f"{stamp}  session.killed  sessionKey=s1 agentId=a1\n"


def test_tail_exits_2_with_a_clear_message_on_bad_credentials(
    server: RunningServer, tails: list[Tail]
) -> None:
    """A refused password exits with status 2 and says so, without a traceback."""
    tail = Tail(server.ws_url + "/", "-u", USER, "--password-env", PASSWORD_VAR, password="nope")
    tails.append(tail)
    code, stderr = tail.finish()
    assert code == 2
    assert "authentication failed (401)" in stderr
    assert "Traceback" not in stderr
    assert "nope" not in stderr


def test_tail_exits_cleanly_on_sigint(server: RunningServer, tails: list[Tail]) -> None:
    """Ctrl-C (SIGINT) ends tail at once with status 130 and no traceback."""
    tail = Tail(server.ws_url + "/", "-u", USER, "--password-env", PASSWORD_VAR)
    tails.append(tail)
    tail.wait_stderr("connected to")
    tail.proc.send_signal(signal.SIGINT)
    code, stderr = tail.finish(timeout=5.0)
    assert code in (0, 130)
    assert "Traceback" not in stderr


# --------------------------------------------------------------------------- in-process


def test_tail_refuses_a_password_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A password in the URL is refused: it would show in ps and shell history."""
    assert main(["tail", "ws://admin:secret@localhost/ws"]) == 2
    assert "password" in capsys.readouterr().err


def test_tail_password_env_needs_a_user(capsys: pytest.CaptureFixture[str]) -> None:
    """--password-env without -u is a usage error."""
    assert main(["tail", "ws://localhost/ws", "--password-env", PASSWORD_VAR]) == 2
    assert "-u USER" in capsys.readouterr().err


def test_tail_reports_an_unset_password_variable(capsys: pytest.CaptureFixture[str]) -> None:
    """A named but unset password variable is reported by name."""
    env = "LIVEPANEL_TEST_UNSET_VARIABLE"
    assert main(["tail", "ws://localhost/ws", "-u", "a", "--password-env", env]) == 2
    assert f"{env} is not set" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Plain `livepanel` shows the commands and exits 2."""
    assert main([]) == 2
    assert "tail" in capsys.readouterr().err


def test_demo_without_the_demo_module_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """When livepanel.demo cannot be imported, demo says so and exits 1."""
    monkeypatch.setitem(sys.modules, "livepanel.demo", None)
    assert main(["demo"]) == 1
    assert "cannot start the demo" in capsys.readouterr().err


def test_demo_passes_host_port_redis_and_interval_to_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """demo calls livepanel.demo.serve with the options given, defaults for the rest."""
    calls: list[dict[str, Any]] = []
    fake = types.ModuleType("livepanel.demo")
    fake.serve = lambda **kwargs: calls.append(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "livepanel.demo", fake)
    assert main(["demo", "--port", "9000", "--redis", "redis://localhost:6379/0"]) == 0
    assert main(["demo", "--interval", "0"]) == 0
    assert calls == [
        {"host": "127.0.0.1", "port": 9000, "backend_url": "redis://localhost:6379/0",
         "interval": 1.5, "heartbeat_interval": 25.0},
        {"host": "127.0.0.1", "port": 8000, "backend_url": None, "interval": 0.0,
         "heartbeat_interval": 25.0},
    ]  # fmt: skip


def test_summary_shortens_long_values_and_quotes_spaces() -> None:
    """The summary is key=value pairs; long values are cut, values with spaces are JSON."""
    line = summarize({"command": "make all", "stdout": "x" * 100, "exitCode": 0})
    assert line == 'command="make all" stdout=' + "x" * 39 + "… exitCode=0"


def test_tail_says_when_it_catches_up_and_when_it_is_live(
    server: RunningServer, broadcaster: Broadcaster, tails: list[Tail]
) -> None:
    """--since behind the stream: "catching up" then "caught up; live" on stderr."""
    first = broadcaster.publish("session.killed", {"sessionKey": "s0", "agentId": "a1"})
    for n in (1, 2):
        broadcaster.publish("session.killed", {"sessionKey": f"s{n}", "agentId": "a1"})
    tail = Tail(
        server.ws_url + "/", "-u", USER, "--password-env", PASSWORD_VAR, "--since", str(first.id)
    )
    tails.append(tail)
    tail.wait_stderr("catching up")
    tail.wait_stderr("caught up; live")
    assert len(tail.lines(2)) == 2
