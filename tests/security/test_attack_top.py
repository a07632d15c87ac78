"""`livepanel top` against a hostile endpoint, as whoever answers at the health check's or
the metrics page's address (a compromised app, a proxy, a wrong port) would try to drive the
operator's terminal: escape sequences in every value top prints (``ESC]0;…BEL`` retitles
the window, ``ESC[2J`` clears it, ``CR`` overwrites a line, C1 ``CSI``), in the health
report and in the metrics' labels. Each value is shown escaped as ``tail`` escapes
payloads, in a real terminal (tmux) and in ``--once`` output, and nothing the page holds
makes top crash."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from livepanel.top import Reading, parse_metrics, read, render, top
from tests.ops.test_top import Terminal, terminal  # noqa: F401 - the tmux fixture
from tests.servers import RunningServer, run_server

TITLE = "pwned-title"
HOSTILE = f"\x1b]0;{TITLE}\x07\x1b[2J\rforged\x9b31m\x7f"
"""OSC retitle, clear screen, carriage return, C1 CSI, DEL."""
IN_A_LINE = HOSTILE.replace("\r", "")
"""What fits in one line of a metrics page (a line break would end the sample)."""
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # every control character but \n

HEALTH = {
    "ok": True,
    "backend": f"ok{HOSTILE}",
    "readerLagSeconds": 0.0,
    "connections": [HOSTILE, {"x": HOSTILE}],
    "draining": False,
}
METRICS = "\n".join(
    [
        "# TYPE livepanel_handshakes_total counter",
        f'livepanel_handshakes_total{{status="101{IN_A_LINE}"}} 3.0',
        'livepanel_handshakes_total{status="401"} 1.0',
        "livepanel_events_published_total 5.0",
        'livepanel_connections{transport="websocket"} 2.0',
        "",
    ]
)


async def hostile(scope: Any, receive: Any, send: Any) -> None:
    """/healthz and /metrics as an attacker writes them; a 503 with a hostile reason
    elsewhere."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/healthz":
        status, kind, body = 200, b"application/json", json.dumps(HEALTH).encode()
    elif scope["path"] == "/metrics":
        status, kind, body = 200, b"text/plain; version=0.0.4", METRICS.encode()
    else:
        status, kind, body = 503, b"application/json", json.dumps([HOSTILE]).encode()
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def attacker() -> Iterator[RunningServer]:
    with run_server(hostile, "uvicorn-wsproto") as server:
        yield server


def urls(server: RunningServer) -> list[str]:
    base = server.http_url
    return [f"{base}/healthz", f"{base}/metrics"]


def test_attack_top_in_a_terminal_is_not_retitled_cleared_or_overwritten(
    attacker: RunningServer,
    terminal: Terminal,  # noqa: F811 - the fixture imported above
) -> None:
    """tmux runs `livepanel top` on the hostile pages: the window keeps its title, and the
    screen shows each value escaped (\\u001b]0;…) on its own line, under top's title."""
    terminal.start([sys.executable, "-m", "livepanel", "top", *urls(attacker), "--interval", "0.3"])
    screen = terminal.wait_for(r"^handshakes 101", r"\\u001b\]0;" + TITLE, r"^livepanel top")
    title = terminal.tmux("display-message", "-p", "-t", "top", "#{pane_title}")
    assert TITLE not in title
    assert "\x1b" not in screen
    lines = screen.splitlines()
    assert lines[0].startswith("livepanel top"), screen  # not cleared away
    assert any(line.startswith("health      OK (200)  backend ok\\u001b") for line in lines)
    assert not any(line.startswith("forged") for line in lines), screen  # no line overwritten


def test_attack_top_once_writes_no_control_character(attacker: RunningServer) -> None:
    """`livepanel top --once` on the hostile pages prints one screen with no control
    character but line ends, every hostile value escaped."""
    done = subprocess.run(
        [sys.executable, "-m", "livepanel", "top", "--once", *urls(attacker)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert CONTROL.search(done.stdout) is None, repr(done.stdout)
    assert "backend ok\\u001b]0;" + TITLE + "\\u0007\\u001b[2J\\u000dforged\\u009b31m\\u007f" in (
        done.stdout
    )
    assert "handshakes 101\\u001b]0;" in done.stdout


def test_attack_top_on_a_terminal_adds_only_its_own_escapes(attacker: RunningServer) -> None:
    """Drawn as on a terminal (colors, in-place refresh): once top's own sequences are taken
    out, no control character is left."""

    class TTY:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> int:
            self.text += text
            return len(text)

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return True

    out = TTY()
    assert top(urls(attacker), interval=0.1, rounds=2, out=out) == 0  # type: ignore[arg-type]
    ours = re.compile(r"\x1b\[(?:\?25[lh]|2J|H|K|J|[0-9;]*m)")
    left = ours.sub("", out.text)
    assert CONTROL.search(left) is None, repr(left)


def test_values_of_the_wrong_kind_are_shown_not_crashed_on() -> None:
    """A lag that is not a number, infinite and NaN counters, a health report that is a
    list: top shows them (escaped) and carries on."""
    odd = "livepanel_events_published_total +Inf\nlivepanel_events_delivered_total NaN\n"
    samples = parse_metrics(METRICS + odd)
    health = {**HEALTH, "readerLagSeconds": f"0{HOSTILE}"}
    reading = Reading(at=1.0, health=health, health_status=200, samples=samples)
    screen = "\n".join(render(reading, Reading(at=0.0, samples=samples)))
    assert "reader lag 0\\u001b]0;" in screen
    assert re.search(r"^published\s+inf\s", screen, re.MULTILINE)
    assert re.search(r"^delivered\s+nan\s", screen, re.MULTILINE)
    assert CONTROL.search(screen) is None


def test_attack_a_health_report_that_is_not_an_object_is_an_error(
    attacker: RunningServer,
) -> None:
    """JSON that is not an object (a list holding escapes, with 503) is reported as not a
    health report, not shown as one, and top goes on showing the other pages (exiting 1, as
    for any page it could not read)."""
    other = f"{attacker.http_url}/other"
    reading = read([other])
    assert reading.health is None
    assert reading.errors == {other: "not a livepanel health report (HTTP 503)"}
    done = subprocess.run(
        [sys.executable, "-m", "livepanel", "top", "--once", other, *urls(attacker)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"{other}: not a livepanel health report (HTTP 503)" in done.stdout
    assert "handshakes 401" in done.stdout
