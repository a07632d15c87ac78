"""livepanel.js in Chromium tells live from catching up, says how stale it is, and follows a
server's retry hints, on the Quickstart's middleware app (Basic login, tickets, audiences,
metrics, presence, tracing, state and SSE all on) with a real Redis, under uvicorn.

The server in front (tests/browser/hinting_app.py) closes connections with 1012/1013 and
``retry_after=<seconds>``, and refuses handshakes with a 429 probe and ``Retry-After``, as a
worker shutting down or over its admission rate does. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import wait_until
from tests.servers import free_port

pytestmark = pytest.mark.redis

ROOT = Path(__file__).parents[2]
USER, PASSWORD = "admin", "quick:start"

# the page's client, recording every status change (with its detail, the time and how many
# events its handlers had run by then) and every event id
CONNECT = """async (options) => {
  const { connect } = await import("/livepanel.js");
  window.changes = [];
  window.seen = [];
  window.client = connect("/ws", { types: ["session.*"], ...options });
  window.client.on("session.created", (event) => { window.seen.push(event.id); });
  window.client.on("status", (change) => {
    window.changes.push({ ...change, at: performance.now(), seen: window.seen.length });
  });
}"""


@dataclass
class Server:
    """``uvicorn tests.browser.hinting_app:app`` in a subprocess."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hint(self, action: str, **query: Any) -> Any:
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False) as client:
            response = client.post(f"/_hints/{action}", params=query)
        response.raise_for_status()
        return response.json()

    def happenings(self) -> list[tuple[str, float]]:
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False) as client:
            return [(what, at) for what, at in client.get("/_hints/log").json()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def server(redis_url: str, tmp_path: Path) -> Iterator[Server]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT))),
        "PYTHONUNBUFFERED": "1",
        "LIVEPANEL_BACKEND_URL": redis_url,
        "DASHBOARD_USERNAME": USER,
        "DASHBOARD_PASSWORD": PASSWORD,
        "LIVEPANEL_TICKET_SECRET": "staying-live-" * 4,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    log = tmp_path / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "tests.browser.hinting_app:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    running = Server(port, process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"uvicorn exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"uvicorn did not answer:\n{log.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{running.url}/healthz", timeout=1, trust_env=False).is_success:
                    break
            time.sleep(0.05)
        yield running
    finally:
        running.stop()
        print(log.read_text(errors="replace"))  # shown when the test failed


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[Server, dict[str, Any]], Any]]:
    contexts: list[Any] = []

    def open_one(server: Server, options: dict[str, Any]) -> Any:
        context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
        contexts.append(context)
        page = context.new_page()
        page.goto(server.url + "/")
        page.evaluate(CONNECT, options)
        return page

    try:
        yield open_one
    finally:
        for context in contexts:
            context.close()


def statuses(page: Any) -> list[str]:
    return [change["status"] for change in page.evaluate("() => window.changes")]


def test_statuses_catching_up_on_a_replay_then_live_then_reconnecting_then_closed(
    server: Server, open_page: Callable[[Server, dict[str, Any]], Any]
) -> None:
    """connecting → catching_up (800 events to replay) → open with all 800 handled; staleness
    grows in silence and resets on an event; reconnecting when the server dies, then closed."""
    since = server.hint("publish", count=1)["ids"][0]
    replayed = server.hint("publish", count=800)["ids"]
    page = open_page(server, {"since": since, "retries": 2, "initialDelay": 200, "maxDelay": 400})
    wait_until(page, "() => window.client.status === 'open'", timeout=20)
    changes = page.evaluate("() => window.changes")
    assert [c["status"] for c in changes] == ["connecting", "catching_up", "open"]
    assert changes[1]["seen"] < len(replayed), "catching_up came after the replay"
    assert changes[2]["seen"] == len(replayed), "open before the replay was handled"
    assert page.evaluate("() => window.seen") == replayed
    assert page.evaluate("() => window.client.isConnected") is True

    # staleness: nothing matching arrives (the heartbeat interval is 25 s) ...
    page.wait_for_timeout(2000)
    assert page.evaluate("() => window.client.staleness") >= 1.9
    # ... until an event does
    fresh = server.hint("publish", count=1)["ids"][0]
    wait_until(page, "(id) => window.seen.includes(id)", fresh)
    assert page.evaluate("() => window.client.staleness") < 1.0

    server.stop()
    wait_until(page, "() => window.client.status === 'closed'", timeout=20)
    after = list(page.evaluate("() => window.changes"))[3:]
    assert after[0]["status"] == "reconnecting"
    assert {c["status"] for c in after[:-1]} == {"reconnecting"}
    assert after[-1]["status"] == "closed"
    assert after[-1]["reason"] == "gave_up"
    offline = page.evaluate("() => window.client.staleness")
    page.wait_for_timeout(1200)
    assert page.evaluate("() => window.client.staleness") >= offline + 1.1, (
        "it keeps growing offline"
    )


def test_a_1012_restart_hint_is_waited_out_then_the_resume_loses_nothing(
    server: Server, open_page: Callable[[Server, dict[str, Any]], Any]
) -> None:
    """Closed with 1012 ``retry_after=1.5``: reconnecting with the hint, no handshake for at
    least 1.5 s, then a resume with every event published meanwhile, none twice."""
    page = open_page(server, {})
    wait_until(page, "() => window.client.status === 'open'")
    before = server.hint("publish", count=5)["ids"]
    wait_until(page, "(n) => window.seen.length === n", len(before))
    assert server.hint("kick", code=1012, reason="retry_after=1.5")["kicked"] == 1
    during = server.hint("publish", count=5)["ids"]
    wait_until(page, "(n) => window.seen.length >= n", len(before) + len(during), timeout=15)
    page.wait_for_timeout(300)  # nothing repeated arrives late
    assert page.evaluate("() => window.seen") == before + during

    waiting = next(
        c for c in page.evaluate("() => window.changes") if c["status"] == "reconnecting"
    )
    assert waiting["retryAfter"] == 1.5
    assert waiting["closeCode"] == 1012
    assert 1500 <= waiting["retryIn"] <= 1800
    assert waiting["attempt"] == 0, "a hinted wait is not a failed attempt"
    log = server.happenings()
    kicked = next(at for what, at in log if what == "kick 1012")
    again = [at for what, at in log if what == "handshake" and at > kicked]
    assert again, log
    assert again[0] - kicked >= 1.5, f"came back {again[0] - kicked:.2f} s after the hint of 1.5 s"
    assert page.evaluate("() => window.client.status") == "open"


def test_a_429_probe_with_retry_after_is_waited_out_then_the_resume_loses_nothing(
    server: Server, open_page: Callable[[Server, dict[str, Any]], Any]
) -> None:
    """Dropped without a hint, the next handshake refused and its probe answered 429
    ``Retry-After: 2``: one refused handshake only, then at least 2 s before the next."""
    page = open_page(server, {"transport": "websocket"})
    wait_until(page, "() => window.client.status === 'open'")
    before = server.hint("publish", count=3)["ids"]
    wait_until(page, "(n) => window.seen.length === n", len(before))
    server.hint("refuse", count=1, retry_after=2)
    server.hint("kick", code=1011, reason="")  # an error, no hint: the ordinary backoff
    during = server.hint("publish", count=3)["ids"]
    wait_until(page, "(n) => window.seen.length >= n", len(before) + len(during), timeout=20)
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.seen") == before + during

    log = server.happenings()
    assert [what for what, _ in log].count("refused") == 1
    probed = next(at for what, at in log if what == "probe 429")
    again = [at for what, at in log if what == "handshake" and at > probed]
    assert again, log
    assert again[0] - probed >= 2.0, log
    hinted = [c for c in page.evaluate("() => window.changes") if c.get("httpStatus") == 429]
    assert hinted
    assert hinted[0]["retryAfter"] == 2
    assert 2000 <= hinted[0]["retryIn"] <= 2400


@pytest.mark.parametrize(
    "reason",
    ["retry_after=-5", "retry_after=1e309", "retry_after=NaN", "x" * 123],
    ids=["negative", "overflow", "nan", "junk"],
)
def test_attack_a_garbled_hint_neither_stalls_nor_spins_the_client(
    server: Server, open_page: Callable[[Server, dict[str, Any]], Any], reason: str
) -> None:
    """A hostile close reason is no hint: the ordinary backoff (one counted attempt) brings
    the page back within seconds, once, and it resumes."""
    page = open_page(server, {})
    wait_until(page, "() => window.client.status === 'open'")
    server.hint("kick", code=1013, reason=reason)
    during = server.hint("publish", count=2)["ids"]
    wait_until(page, "(ids) => ids.every((id) => window.seen.includes(id))", during, timeout=10)
    waits = [c for c in page.evaluate("() => window.changes") if c["status"] == "reconnecting"]
    assert len(waits) == 1
    assert waits[0]["attempt"] == 1
    assert waits[0]["retryAfter"] is None
    kicked = next(at for what, at in server.happenings() if what == "kick 1013")
    handshakes = [at for what, at in server.happenings() if what == "handshake" and at > kicked]
    assert len(handshakes) == 1, "the client reconnected once, not in a loop"


def test_attack_a_900_s_hint_is_capped_and_reconnect_still_works(
    server: Server, open_page: Callable[[Server, dict[str, Any]], Any]
) -> None:
    """``retry_after=900`` waits at most 300 s plus jitter (not forever, not at once), and
    ``reconnect()`` ends the wait on the user's word."""
    page = open_page(server, {})
    wait_until(page, "() => window.client.status === 'open'")
    server.hint("kick", code=1012, reason="retry_after=900")
    wait_until(page, "() => window.client.status === 'reconnecting'")
    waiting = page.evaluate("() => window.changes.at(-1)")
    assert waiting["retryAfter"] == 300
    assert 300_000 <= waiting["retryIn"] <= 360_000
    page.wait_for_timeout(1000)
    assert page.evaluate("() => window.client.status") == "reconnecting"
    page.evaluate("() => window.client.reconnect()")
    wait_until(page, "() => window.client.status === 'open'")
