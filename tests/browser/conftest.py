"""Headless Chromium driving the real demo server, started as ``python -m livepanel.demo``.

The tests skip when Playwright or Chromium is missing, unless
``LIVEPANEL_REQUIRE_BROWSER=1`` (CI), where they fail and say what to install.
Chromium is Debian's (``/usr/bin/chromium``, or ``LIVEPANEL_CHROMIUM``):
Playwright's own browser downloads are not used.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.requirements import unavailable
from tests.servers import free_port

CHROMIUM = os.environ.get("LIVEPANEL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USER, PASSWORD = "operator", "correct horse:battery"
ROOT = Path(__file__).resolve().parents[2]


def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set LIVEPANEL_CHROMIUM)"
    return None


def expect(target: Any) -> Any:
    """Playwright's ``expect``, imported late so a missing Playwright skips instead of erroring."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def wait_until(page: Any, script: str, arg: Any = None, timeout: float = 10.0) -> Any:
    """Evaluate ``script`` in the page until it returns something truthy, and return that.

    Playwright's own ``wait_for_function`` evaluates strings inside the page,
    which the demo's Content-Security-Policy (rightly) forbids.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = page.evaluate(script, arg)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {script}")
        page.wait_for_timeout(50)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per module; each test opens its own contexts.

    Playwright's sync API marks its event loop as running in this thread while it
    is open, so it is stopped after each module: later tests call asyncio.run().
    """
    missing = _missing_browser()
    if missing is not None:
        unavailable("browser", missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class DemoServer:
    """``python -m livepanel.demo`` in a subprocess, which a test may kill and start again."""

    def __init__(
        self,
        log_dir: Path,
        *,
        backend_url: str | None,
        interval: float,
        heartbeat: float | None = None,
    ) -> None:
        self.port = free_port()
        self.backend_url = backend_url
        self.interval = interval
        self.heartbeat = heartbeat
        self.log_dir = log_dir
        self.password = PASSWORD
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, password: str | None = None, timeout: float = 20.0) -> None:
        """Start the server (optionally with another password) and wait until it answers."""
        if password is not None:
            self.password = password
        args = [sys.executable, "-m", "livepanel.demo", "--port", str(self.port)]
        args += ["--interval", str(self.interval)]
        if self.heartbeat is not None:
            args += ["--heartbeat", str(self.heartbeat)]
        if self.backend_url:
            args += ["--backend-url", self.backend_url]
        env = {
            **os.environ,
            "DASHBOARD_USERNAME": USER,
            "DASHBOARD_PASSWORD": self.password,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT / "src"),
        }
        self.starts += 1
        log = (self.log_dir / f"demo-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the demo server exited on start-up:\n{self.logs()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/api/stats", auth=self.auth, timeout=1).is_success:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"the demo server did not answer on {self.url}:\n{self.logs()}")

    def kill(self) -> None:
        """SIGKILL, like a crash: no goodbye to the clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the server stops answering but its sockets stay open, as a hung host's."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    @property
    def auth(self) -> tuple[str, str]:
        return (USER, self.password)

    def get(self, path: str) -> Any:
        """GET a JSON route with the current credentials."""
        response = httpx.get(f"{self.url}{path}", auth=self.auth, timeout=5)
        response.raise_for_status()
        return response.json()

    def state(self) -> dict[str, Any]:
        """The server's state, as a client connecting now gets it (``?state=1``)."""
        token = base64.b64encode(f"{USER}:{self.password}".encode()).decode()
        url = f"ws://127.0.0.1:{self.port}/ws?state=1"
        with connect(url, additional_headers={"Authorization": f"Basic {token}"}) as ws:
            for _ in range(10):  # welcome, then the state frame
                frame = json.loads(str(ws.recv(timeout=5)))
                if frame["type"] == "state":
                    payload: dict[str, Any] = frame["payload"]
                    return payload
        raise AssertionError("no state frame after welcome")

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')}"
            for path in sorted(self.log_dir.glob("demo-*.log"))
        )


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Callable[..., DemoServer]]:
    """A factory: ``start_demo(backend_url=None, interval=1.5, heartbeat=None)``; every server
    killed at the end."""
    servers: list[DemoServer] = []

    def start(
        *, backend_url: str | None = None, interval: float = 1.5, heartbeat: float | None = None
    ) -> DemoServer:
        server = DemoServer(
            tmp_path, backend_url=backend_url, interval=interval, heartbeat=heartbeat
        )
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.kill()
            print(server.logs())  # shown when the test failed


@pytest.fixture
def demo(start_demo: Callable[..., DemoServer]) -> DemoServer:
    """The demo on the memory backend, its simulated gateway publishing steadily."""
    return start_demo()


@pytest.fixture
def open_dashboard(browser: Any) -> Iterator[Callable[..., Any]]:
    """Open the dashboard in a fresh browser context logged in with Basic Auth."""
    contexts: list[Any] = []

    def open_page(server: DemoServer) -> Any:
        context = browser.new_context(
            http_credentials={"username": USER, "password": server.password},
            viewport={"width": 1440, "height": 900},
        )
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.page_errors = errors
        page.goto(server.url + "/")
        wait_until(page, "() => window.livepanelDemo?.client?.status === 'open'")
        return page

    try:
        yield open_page
    finally:
        for context in contexts:
            context.close()
