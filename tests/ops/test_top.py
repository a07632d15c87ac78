"""`livepanel top` in a real terminal (tmux): it shows the numbers the endpoint reports."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

from livepanel.cli import main
from livepanel.top import Reading, parse_metrics, render
from tests.integration.helpers import basic, expect_welcome, open_ws, recv_events, refusal
from tests.integration.test_slow_consumer import cron_output
from tests.ops.test_metrics import instrumented_server
from tests.requirements import unavailable

TMUX = shutil.which("tmux")
ROOT = Path(__file__).parents[2]


class Terminal:
    """A detached tmux session on a private server, 100 columns by 30 lines."""

    def __init__(self, name: str, config: Path) -> None:
        self.socket = name
        self.config = config

    def tmux(self, *args: str) -> str:
        command = [TMUX or "tmux", "-L", self.socket, "-f", str(self.config), *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    def start(self, argv: list[str]) -> None:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        line = shlex.join(["env", f"PYTHONPATH={path}", "TERM=xterm", *argv])
        self.tmux("new-session", "-d", "-x", "100", "-y", "30", "-s", "top", line)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def wait_for(self, *patterns: str, timeout: float = 10.0) -> str:
        """The screen, once every regular expression in ``patterns`` matches it."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if all(re.search(p, screen, re.MULTILINE) for p in patterns):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"the terminal never showed {patterns}:\n{screen}")
            time.sleep(0.05)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    """A tmux server of this test's own; killed at the end."""
    if TMUX is None:
        unavailable("tmux", "tmux is not on PATH (apt-get install tmux, or make services)")
    config = tmp_path / "tmux.conf"
    config.write_text("set -g remain-on-exit on\nset -g status off\n")
    term = Terminal(f"livepanel-test-{os.getpid()}", config)
    try:
        yield term
    finally:
        subprocess.run([TMUX, "-L", term.socket, "kill-server"], capture_output=True, check=False)


def row(label: str, total: int) -> str:
    """A counter row of the screen: label, total, then a rate."""
    return rf"^{re.escape(label)}\s+{total}\s+\S+\s*$"


def test_top_shows_the_numbers_the_endpoint_reports(terminal: Terminal) -> None:
    """Health and counters as /healthz and /metrics report them, redrawn in place."""
    with instrumented_server() as (server, broadcaster, _endpoint):
        with open_ws(server) as first, open_ws(server) as second:
            expect_welcome(first)
            expect_welcome(second)
            refusal(server, headers={"Authorization": basic("admin", "wrong")})
            for n in range(4):
                cron_output(broadcaster, n)
            for ws in (first, second):
                recv_events(ws, 4)
            base = server.http_url
            urls = [f"{base}/healthz", f"{base}/metrics"]
            terminal.start([sys.executable, "-m", "livepanel", "top", *urls, "--interval", "0.3"])
            terminal.wait_for(
                r"health\s+OK \(200\)\s+backend ok\s+reader lag 0\.000 s\s+connections 2",
                row("published", 4),
                row("delivered", 8),
                row("handshakes 101", 2),
                row("handshakes 401", 1),
            )
            for n in range(4, 7):
                cron_output(broadcaster, n)
            for ws in (first, second):
                recv_events(ws, 3)
            screen = terminal.wait_for(
                row("published", 7),
                row("delivered", 14),
                row("dropped", 0),
                row("slow disconnects", 0),
            )
            stats = broadcaster.stats()
            assert (stats["published"], stats["delivered"]) == (7, 14)
            assert screen.count("published") == 1, "the screen scrolled instead of redrawing"
            assert "\x1b" not in screen  # tmux drew the escapes; none leaked as text
        terminal.wait_for(r"connections 0")


def test_top_once_prints_one_screen_and_fails_when_nothing_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--once without an answer: the reason on the screen, exit status 1."""
    assert main(["top", "--once", "http://127.0.0.1:9/healthz"]) == 1
    assert "http://127.0.0.1:9/healthz:" in capsys.readouterr().out


def test_rates_are_the_change_between_two_reads() -> None:
    """Two readings a second apart, 10 more events: 10.0 per second."""
    page = 'livepanel_events_published_total {n}\nlivepanel_connections{{transport="websocket"}} 2'
    before = Reading(at=0.0, samples=parse_metrics(page.format(n=5)))
    now = Reading(at=1.0, samples=parse_metrics(page.format(n=15)))
    lines = render(now, before)
    assert "connections 2  reader lag -" in lines
    assert any(re.fullmatch(r"published\s+15\s+10\.0", line) for line in lines), lines


def test_top_without_a_terminal_prints_each_screen_in_turn() -> None:
    """Not a terminal: no escapes, one screen after the other, rates from the second on."""
    import io

    from livepanel.top import top

    with instrumented_server() as (server, broadcaster, _endpoint):
        out = io.StringIO()
        cron_output(broadcaster, 0)
        base = server.http_url
        assert top([f"{base}/healthz", f"{base}/metrics"], interval=0.05, out=out, rounds=2) == 0
    screens = re.split(r"^(?=livepanel top )", out.getvalue(), flags=re.MULTILINE)[1:]
    assert "\x1b" not in out.getvalue()
    assert len(screens) == 2
    assert re.search(r"^published\s+1\s+-$", screens[0], re.MULTILINE), screens[0]
    assert re.search(r"^published\s+1\s+0\.0$", screens[1], re.MULTILINE), screens[1]


def test_a_failing_check_and_a_bad_url_are_shown() -> None:
    """503 with a report shows NOT OK and its reason; a URL that is not http is named."""
    from livepanel.top import read

    report = {
        "ok": False,
        "backend": "stalled",
        "readerLagSeconds": 7.5,
        "connections": 3,
        "draining": False,
    }
    lines = render(Reading(at=0.0, health=report, health_status=503), None, color=True)
    assert "\x1b[31mNOT OK\x1b[0m (503)  backend stalled  reader lag 7.500 s" in lines[2]
    reading = read(["ftp://127.0.0.1/metrics"])
    assert reading.errors == {
        "ftp://127.0.0.1/metrics": "ftp://127.0.0.1/metrics is not an http:// or https:// URL"
    }


def test_delivery_percentiles_are_read_from_the_histogram_buckets() -> None:
    """p50 and p99 as the upper bounds of the buckets that hold them."""
    page = "\n".join(
        f'livepanel_delivery_seconds_bucket{{le="{le}"}} {count}'
        for le, count in (("0.001", 10), ("0.005", 60), ("0.01", 99), ("0.1", 100), ("+Inf", 100))
    )
    lines = render(Reading(at=0.0, samples=parse_metrics(page)), None)
    assert "delivery    p50 <= 0.005 s  p99 <= 0.010 s" in lines
