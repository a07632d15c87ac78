"""The Caddy recipe of docs/deployment.md, run in Debian's Caddy in front of uvicorn:
Server-Sent Events pass through it message by message (WebSocket: tests/docs)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from livepanel import BasicAuth, Broadcaster, LivePanelApp
from livepanel.events import SessionCreated
from tests.deployment.test_nginx import AUTH, EventStream
from tests.docs.test_snippets import caddy_binary
from tests.servers import free_port, run_server

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
HEARTBEAT = 0.5


def recipe() -> str:
    """The Caddyfile of the deployment docs, exactly as written there."""
    blocks = re.findall(r"```caddyfile\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/deployment.md should hold exactly one Caddyfile"
    return blocks[0]


@pytest.fixture
def caddy_in_front(tmp_path: Path) -> Iterator[tuple[str, Broadcaster]]:
    """uvicorn behind the recipe's Caddy on plain HTTP: (base URL, broadcaster)."""
    caddy = caddy_binary()
    broadcaster = Broadcaster()
    app = LivePanelApp(
        broadcaster,
        auth=BasicAuth(lambda u, p: (u, p) == ("admin", "secret")),
        heartbeat_interval=HEARTBEAT,
    )
    listen = free_port()
    with run_server(app, "uvicorn-websockets") as upstream:
        site = recipe()
        assert "reverse_proxy 127.0.0.1:8000" in site
        site = site.replace(
            "reverse_proxy 127.0.0.1:8000", f"reverse_proxy 127.0.0.1:{upstream.port}"
        )
        site = re.sub(r"^[\w.-]+ \{", f"http://127.0.0.1:{listen} {{", site, count=1)
        config = tmp_path / "Caddyfile"
        config.write_text("{\n\tadmin off\n\tauto_https off\n}\n\n" + site, encoding="utf-8")
        log_path = tmp_path / "caddy.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [caddy, "run", "--config", str(config), "--adapter", "caddyfile"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)},
            )
        base = f"http://127.0.0.1:{listen}"
        try:
            deadline = time.monotonic() + 15
            while True:
                with contextlib.suppress(httpx.TransportError):
                    httpx.get(f"{base}/ws", timeout=1)
                    break
                assert time.monotonic() < deadline, log_path.read_text()
                assert process.poll() is None, log_path.read_text()
                time.sleep(0.1)
            yield base, broadcaster
        finally:
            process.terminate()
            process.wait(10)


def sse(base: str, **headers: str) -> Any:
    return httpx.stream(
        "GET",
        f"{base}/ws",
        headers={**AUTH, "Accept": "text/event-stream", **headers},
        timeout=httpx.Timeout(5.0, read=2 * HEARTBEAT + 1),
    )


def test_server_sent_events_arrive_through_caddy_each_at_once(
    caddy_in_front: tuple[str, Broadcaster],
) -> None:
    """Through the recipe: welcome, each event as it is published, `: ping` when idle."""
    base, broadcaster = caddy_in_front
    with sse(base) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response)
        assert stream.next_message()["event"] == "welcome"
        for n in range(3):  # one at a time: a buffering proxy would hold them back
            broadcaster.publish(SessionCreated(session_key=f"s{n}", agent_id="a1", kind="direct"))
            message = stream.next_event("session.created")
            assert json.loads(message["data"])["payload"]["sessionKey"] == f"s{n}"
        last_id = message["id"]
        assert stream.next_message() == {"comment": "ping"}
    broadcaster.publish(SessionCreated(session_key="missed", agent_id="a1", kind="cron"))
    with sse(base, **{"Last-Event-ID": last_id}) as response:
        stream = EventStream(response)
        stream.next_event("welcome")
        message = stream.next_event("session.created")
        assert json.loads(message["data"])["payload"]["sessionKey"] == "missed"


def test_a_refused_event_stream_comes_back_as_the_endpoints_own_401(
    caddy_in_front: tuple[str, Broadcaster],
) -> None:
    """Without credentials the stream is refused by the endpoint, through Caddy, with its JSON."""
    base, _ = caddy_in_front
    response = httpx.get(f"{base}/ws", headers={"Accept": "text/event-stream"}, timeout=5)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
