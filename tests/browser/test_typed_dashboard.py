"""The ClawPanel example, built from the packed livepanel-react package and the generated
types, in Chromium: typed events end to end, then a deploy with changed event types.

Needs the example's bundle (``make reacttest`` builds ``examples/react/dist``); without it
the test skips, unless ``LIVEPANEL_REQUIRE_NPM=1`` (CI).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import ROOT, expect
from tests.browser.typed_server import PASSWORD, USER
from tests.requirements import unavailable
from tests.servers import free_port

pytestmark = pytest.mark.browser

DIST = ROOT / "examples" / "react" / "dist"  # built from examples/react/src/App.tsx
PACKAGE = ROOT / "examples" / "react" / "node_modules" / "livepanel-react" / "package.json"


class TypedServer:
    """The example's bundle and an endpoint, in a subprocess a test kills and starts again."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, changed: bool = False, timeout: float = 20.0) -> None:
        args = [sys.executable, "-m", "tests.browser.typed_server", str(self.port), str(DIST)]
        if changed:
            args.append("--changed")
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        self.starts += 1
        log = (self.log_dir / f"typed-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited on start-up:\n{self.logs()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/index.html", timeout=1).is_success:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"the server did not answer on {self.url}:\n{self.logs()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def publish(self, kind: str, payload: dict[str, Any]) -> None:
        response = httpx.post(
            f"{self.url}/publish", json={"type": kind, "payload": payload}, timeout=5
        )
        response.raise_for_status()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')}"
            for p in sorted(self.log_dir.glob("typed-*.log"))
        )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TypedServer]:
    if not (DIST / "index.html").is_file() or not PACKAGE.is_file():
        unavailable("npm", "the React example is not built from the packed package: make reacttest")
    running = TypedServer(tmp_path)
    try:
        yield running
    finally:
        running.kill()
        print(running.logs())


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[str], Any]]:
    contexts: list[Any] = []

    def open_(url: str) -> Any:
        context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.page_errors = errors
        page.goto(url + "/")
        return page

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()


def test_the_typed_dashboard_offers_a_reload_after_a_deploy_and_keeps_receiving(
    server: TypedServer, open_page: Callable[[str], Any]
) -> None:
    """Typed events fill the tables; after a restart with changed types the tab offers a
    reload (the server's fingerprint is no longer the bundle's) and still shows new events."""
    server.start()
    page = open_page(server.url)
    status = page.locator("[role=status]")
    expect(status).to_have_attribute("data-status", "open", timeout=15_000)
    server.publish(
        "session.created",
        {"sessionKey": "s1", "agentId": "a1", "kind": "direct", "label": "nightly"},
    )
    server.publish("agent.status", {"agentId": "a1", "status": "running", "activeSessionCount": 1})
    server.publish("gateway.status", {"status": "running", "version": "1.4.2", "uptime": 61.4})
    server.publish(
        "cron.executed",
        {"jobId": "backup", "command": "tar", "exitCode": 0, "durationMs": 812},
    )
    expect(page.locator("[data-table=sessions] tr[data-key=s1]")).to_contain_text("nightly")
    expect(page.locator("[data-table=agents] tr[data-key=a1]")).to_contain_text("running")
    expect(page.locator("[data-table=cronRuns] tr[data-key=backup]")).to_contain_text("812 ms")
    expect(page.locator("[data-gateway=running]")).to_contain_text("1.4.2")
    expect(page.locator("[data-schema-changed]")).to_have_count(0)

    server.kill()
    expect(status).not_to_have_attribute("data-status", "open", timeout=15_000)
    server.start(changed=True)
    expect(status).to_have_attribute("data-status", "open", timeout=20_000)
    offer = page.locator("[data-schema-changed]")
    expect(offer).to_contain_text("A new version is available", timeout=10_000)
    expect(offer.get_by_role("button", name="Reload")).to_be_visible()

    server.publish("session.created", {"sessionKey": "s2", "agentId": "a2", "kind": "cron"})
    server.publish("deploy.finished", {"service": "api", "outcome": "ok"})  # unknown to the bundle
    server.publish("agent.status", {"agentId": "a2", "status": "idle", "activeSessionCount": 0})
    expect(page.locator("[data-table=sessions] tr[data-key=s2]")).to_contain_text("cron")
    expect(page.locator("[data-table=agents] tr[data-key=a2]")).to_contain_text("idle")
    assert page.page_errors == []
