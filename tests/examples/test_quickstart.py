"""docs/quickstart.md, followed as a newcomer would: its commands, its files, a real browser.

The server is started with the page's own ``uvicorn app:app`` command, in
``examples/quickstart`` (the files the page includes); Chromium opens the page
with the page's login, the page's ``curl`` request is sent, and the event must
appear in the list. Then the other promises of "What you should see": a second
tab, and the page coming back after a server restart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.browser import conftest as browser_suite
from tests.browser.conftest import expect
from tests.docs.markdown import DOCS, ROOT, Command, blocks, shell_lines, simple_commands
from tests.servers import free_port

browser = browser_suite.browser  # the browser suite's Chromium fixture, shared

pytestmark = pytest.mark.browser

PAGE = DOCS / "quickstart.md"
APP_DIR = ROOT / "examples" / "quickstart"


def page_commands() -> list[Command]:
    """Every command of the page's console blocks, in order."""
    found = []
    for block in blocks(PAGE):
        if block.lang == "console":
            for line in shell_lines(block.code):
                found.extend(simple_commands(line))
    return found


def the_command(program: str) -> Command:
    matches = [c for c in page_commands() if c.argv[:1] == [program]]
    assert len(matches) == 1, f"docs/quickstart.md should run {program} exactly once: {matches}"
    return matches[0]


def test_the_page_includes_the_example_files_it_runs() -> None:
    """The app and the page are included from examples/quickstart, not copied."""
    included = {block.include for block in blocks(PAGE) if block.include}
    assert included == {"examples/quickstart/app.py", "examples/quickstart/index.html"}
    install = the_command("pip")
    assert install.argv[:2] == ["pip", "install"]
    assert {"livepanel", "fastapi", "uvicorn"} <= set(install.argv[2:])


class QuickstartServer:
    """The page's ``uvicorn app:app`` command, run in examples/quickstart on a free port."""

    def __init__(self, log: Path) -> None:
        command = the_command("uvicorn")
        assert command.argv == ["uvicorn", "app:app"], command
        self.env = command.env
        self.argv = [sys.executable, "-m", "uvicorn", *command.argv[1:]]
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> tuple[str, str]:
        return self.env["DASHBOARD_USERNAME"], self.env["DASHBOARD_PASSWORD"]

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*self.argv, "--port", str(self.port)],
                cwd=APP_DIR,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited on start-up:\n{self.log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/", timeout=1).status_code == 401:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"the quickstart app did not answer:\n{self.log.read_text()}")

    def stop(self) -> None:
        """Ctrl-C, as the page says."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[QuickstartServer]:
    running = QuickstartServer(tmp_path / "uvicorn.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()
        print(running.log.read_text())  # shown when the test failed


def run_curl(server: QuickstartServer) -> dict[str, Any]:
    """The page's curl request, sent to this test's port."""
    curl = the_command("curl")
    args = curl.argv[1:]
    user, _, password = args[args.index("-u") + 1].partition(":")
    method = args[args.index("-X") + 1]
    url = urlsplit(next(a for a in args if a.startswith("http")))
    assert url.netloc == "127.0.0.1:8000", "the page's curl talks to uvicorn's default address"
    target = urlunsplit(url._replace(netloc=f"127.0.0.1:{server.port}"))
    response = httpx.request(method, target, auth=(user, password), timeout=5)
    assert response.is_success, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_newcomer_sees_live_events_in_the_browser(
    browser: Any, server: QuickstartServer, tmp_path: Path
) -> None:
    """Quickstart: log in, the status is open, curl and the button both show events live."""
    user, password = server.credentials
    context = browser.new_context(http_credentials={"username": user, "password": password})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url + "/")
        expect(page.locator("#status")).to_have_text("open", timeout=10_000)

        spawned = run_curl(server)
        newest = page.locator("#events li").first
        expect(newest).to_contain_text("session.created", timeout=5_000)
        expect(newest).to_contain_text(f'"sessionKey":"{spawned["sessionKey"]}"')
        expect(newest).to_contain_text('"agentId":"atlas"')

        # a second tab on the same address: a click in one shows up in both
        other = context.new_page()
        other.goto(server.url + "/")
        expect(other.locator("#status")).to_have_text("open", timeout=10_000)
        other.get_by_role("button", name="Spawn a session").click()
        expect(page.locator("#events li")).to_have_count(2, timeout=5_000)
        expect(other.locator("#events li")).to_have_count(1, timeout=5_000)
        clicked = other.locator("#events li").first.text_content()
        assert page.locator("#events li").first.text_content() == clicked

        # Ctrl-C: reconnecting; started again: open, and events flow again
        server.stop()
        expect(page.locator("#status")).to_have_text("reconnecting", timeout=10_000)
        server.start()
        expect(page.locator("#status")).to_have_text("open", timeout=20_000)
        again = run_curl(server)
        expect(page.locator("#events li").first).to_contain_text(again["sessionKey"], timeout=5_000)
        assert errors == []
    finally:
        context.close()
