"""Chromium: the browser client fetches a fresh ticket for every connection, through a restart."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.browser.conftest import ROOT, browser, wait_until
from tests.servers import free_port

pytestmark = pytest.mark.browser

__all__ = ["browser"]  # the module-scoped Chromium of tests/browser

USER, PASSWORD = "alice", "correct horse"


class ExampleServer:
    """examples/tickets/app.py under uvicorn in a subprocess, to kill and start again."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        env = {
            **os.environ,
            "DASHBOARD_USERNAME": USER,
            "DASHBOARD_PASSWORD": PASSWORD,
            "SESSION_SECRET": "s" * 32,
            "LIVEPANEL_TICKET_SECRET": "t" * 32,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        }
        env.pop("LIVEPANEL_BACKEND_URL", None)
        args = [sys.executable, "-m", "uvicorn", "examples.tickets.app:app"]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info"]
        self.starts += 1
        with (self.log_dir / f"example-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the example exited on start-up:\n{self.logs()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/", timeout=1).is_success:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"the example did not answer on {self.url}:\n{self.logs()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


@pytest.fixture
def example(tmp_path: Path) -> Iterator[ExampleServer]:
    server = ExampleServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        print(server.logs())  # shown when the test failed


def test_the_page_reconnects_with_fresh_tickets_through_a_server_restart(
    browser: Any, example: ExampleServer
) -> None:
    """Log in and connect with a ticket; kill and restart the server: each connection, a new one."""
    context = browser.new_context()
    page = context.new_page()
    tickets: list[str] = []
    page.on(
        "websocket",
        lambda ws: tickets.extend(parse_qs(urlsplit(ws.url).query).get("ticket", [])),
    )
    try:
        page.goto(example.url + "/")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button")
        wait_until(page, "() => window.livepanelClient?.status === 'open'")
        assert len(tickets) == 1

        example.kill()
        wait_until(page, "() => window.livepanelClient.status === 'reconnecting'", timeout=10)
        example.start()
        wait_until(page, "() => window.livepanelClient.status === 'open'", timeout=40)

        assert len(tickets) >= 2
        assert len(set(tickets)) == len(tickets), "a ticket was sent twice"
        page.evaluate("fetch('/api/sessions/spawn', {method: 'POST'})")
        wait_until(page, "() => document.querySelector('#events li')?.textContent")
        assert "session.created" in page.text_content("#events")
        assert all(ticket not in example.logs() for ticket in tickets)
    finally:
        context.close()
