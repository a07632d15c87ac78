"""The nginx recipe of docs/deployment.md, run in Debian's nginx in front of uvicorn."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from livepanel import BasicAuth, Broadcaster, LivePanelApp
from livepanel.events import SessionCreated
from tests.requirements import unavailable
from tests.servers import free_port, run_server

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
READ_TIMEOUT = 2  # seconds; the recipe's 60 s lowered so the idle test is short
HEARTBEAT = 0.5
AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:secret").decode()}


def nginx_binary() -> str:
    found = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if found is None:
        unavailable("nginx", "nginx is not installed; `make test` installs it")
    return found


def recipe() -> str:
    """The nginx block of the deployment docs, exactly as written there."""
    blocks = re.findall(r"```nginx\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/deployment.md should hold exactly one nginx recipe"
    return blocks[0]


def adapt(config: str, *, listen: int, upstream: int, cert: Path, key: Path) -> str:
    """Point the recipe at this test's ports and certificate, and shorten its read timeout."""
    replacements = [
        ("listen 443 ssl;", f"listen 127.0.0.1:{listen} ssl;"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};"),
        ("/etc/ssl/certs/panel.example.com.pem", str(cert)),
        ("/etc/ssl/private/panel.example.com.key", str(key)),
        ("proxy_read_timeout 60s;", f"proxy_read_timeout {READ_TIMEOUT}s;"),
    ]
    for old, new in replacements:
        assert old in config, f"the recipe no longer contains {old!r}"
        config = config.replace(old, new)
    return config


@pytest.fixture
def nginx_in_front(
    tmp_path: Path, tls_certificate: tuple[str, str]
) -> Iterator[tuple[int, Broadcaster, int]]:
    """uvicorn (trusting nginx's forwarded headers) behind nginx on a TLS port."""
    nginx_binary()  # skip early without nginx
    cert, key = (Path(f) for f in tls_certificate)
    broadcaster = Broadcaster()
    app = LivePanelApp(
        broadcaster,
        auth=BasicAuth(lambda u, p: (u, p) == ("admin", "secret")),
        require_tls=True,
        heartbeat_interval=HEARTBEAT,
    )
    listen = free_port()
    with run_server(
        app, "uvicorn-websockets", proxy_headers=True, forwarded_allow_ips="127.0.0.1"
    ) as upstream:
        server_block = adapt(recipe(), listen=listen, upstream=upstream.port, cert=cert, key=key)
        with run_nginx(tmp_path, server_block, listen):
            yield listen, broadcaster, upstream.port


@contextlib.contextmanager
def run_nginx(tmp_path: Path, server_block: str, listen: int) -> Iterator[None]:
    """Debian's nginx with ``server_block`` (in ``http {}``), until the block ends."""
    binary = nginx_binary()
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""
user root;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/tmp/body;
    proxy_temp_path {tmp_path}/tmp/proxy;
    fastcgi_temp_path {tmp_path}/tmp/fastcgi;
    uwsgi_temp_path {tmp_path}/tmp/uwsgi;
    scgi_temp_path {tmp_path}/tmp/scgi;
{server_block}
}}
"""
    )
    process = subprocess.Popen(
        [binary, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            try:
                with socket_to(listen):
                    break
            except OSError:
                time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(10)


def socket_to(port: int) -> Any:
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=0.5)


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    return context


def next_frame(ws: ClientConnection, kind: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame["type"] == kind:
            return frame


def test_events_arrive_over_wss_through_nginx(
    nginx_in_front: tuple[int, Broadcaster, int],
) -> None:
    """A client connects through the nginx recipe over wss:// and receives events."""
    port, broadcaster, _ = nginx_in_front
    url = f"wss://127.0.0.1:{port}/ws"
    with connect(url, ssl=client_tls(), additional_headers=AUTH, open_timeout=5) as ws:
        next_frame(ws, "welcome", 5)
        broadcaster.publish(SessionCreated(session_key="s1", agent_id="a1", kind="direct"))
        event = next_frame(ws, "session.created", 5)
        assert event["payload"]["sessionKey"] == "s1"


def test_idle_connection_outlives_the_proxy_read_timeout(
    nginx_in_front: tuple[int, Broadcaster, int],
) -> None:
    """Idle for three proxy read timeouts, the connection survives thanks to heartbeats."""
    port, broadcaster, _ = nginx_in_front
    url = f"wss://127.0.0.1:{port}/ws"
    with connect(url, ssl=client_tls(), additional_headers=AUTH, open_timeout=5) as ws:
        next_frame(ws, "welcome", 5)
        pings = 0
        idle_until = time.monotonic() + 3 * READ_TIMEOUT
        while time.monotonic() < idle_until:
            frame = json.loads(ws.recv(timeout=2 * HEARTBEAT + 1))
            assert frame["type"] == "ping", frame
            pings += 1
        assert pings >= int(3 * READ_TIMEOUT / HEARTBEAT) - 2
        broadcaster.publish(SessionCreated(session_key="late", agent_id="a1", kind="cron"))
        assert next_frame(ws, "session.created", 5)["payload"]["sessionKey"] == "late"


def test_tls_is_required_straight_to_uvicorn_but_forwarded_through_nginx(
    nginx_in_front: tuple[int, Broadcaster, int],
) -> None:
    """Through nginx the forwarded scheme is wss and passes; straight to uvicorn it is 403."""
    port, _, upstream = nginx_in_front
    with connect(f"wss://127.0.0.1:{port}/ws", ssl=client_tls(), additional_headers=AUTH) as ws:
        assert next_frame(ws, "welcome", 5)["payload"]["server"].startswith("livepanel/")
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{upstream}/ws", additional_headers=AUTH, open_timeout=5)
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"] == "tls_required"


class EventStream:
    """A Server-Sent Events client of its own (httpx streaming, no livepanel code)."""

    def __init__(self, response: Any) -> None:
        self.lines = response.iter_lines()

    def next_message(self) -> dict[str, str]:
        """The next message's fields (a comment alone comes back as ``{"comment": ...}``)."""
        fields: dict[str, str] = {}
        for line in self.lines:
            if line == "":
                if fields:
                    return fields
                continue
            name, _, value = line.partition(":")
            fields[name or "comment"] = value.removeprefix(" ")
        raise AssertionError("the stream ended")

    def next_event(self, kind: str) -> dict[str, str]:
        while True:
            message = self.next_message()
            if message.get("event") == kind:
                return message


def sse(port: int, **headers: str) -> Any:
    import httpx

    return httpx.stream(
        "GET",
        f"https://127.0.0.1:{port}/ws",
        headers={**AUTH, "Accept": "text/event-stream", **headers},
        verify=False,  # the test's own self-signed certificate
        timeout=httpx.Timeout(5.0, read=2 * HEARTBEAT + 1),
    )


def test_server_sent_events_arrive_through_nginx_each_at_once(
    nginx_in_front: tuple[int, Broadcaster, int],
) -> None:
    """An SSE stream through the recipe gets welcome, then each event as it is published."""
    port, broadcaster, _ = nginx_in_front
    with sse(port) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response)
        assert stream.next_message()["event"] == "welcome"
        for n in range(3):  # one at a time: a buffering proxy would hold them back
            broadcaster.publish(SessionCreated(session_key=f"s{n}", agent_id="a1", kind="direct"))
            message = stream.next_event("session.created")
            assert json.loads(message["data"])["payload"]["sessionKey"] == f"s{n}"
            assert message["id"]


def test_an_idle_event_stream_outlives_the_proxy_read_timeout_and_resumes(
    nginx_in_front: tuple[int, Broadcaster, int],
) -> None:
    """Idle for three read timeouts, `: ping` comments keep the stream; Last-Event-ID resumes."""
    port, broadcaster, _ = nginx_in_front
    with sse(port) as response:
        stream = EventStream(response)
        stream.next_event("welcome")
        broadcaster.publish(SessionCreated(session_key="first", agent_id="a1", kind="cron"))
        last_id = stream.next_event("session.created")["id"]
        pings = 0
        idle_until = time.monotonic() + 3 * READ_TIMEOUT
        while time.monotonic() < idle_until:
            assert stream.next_message() == {"comment": "ping"}
            pings += 1
        assert pings >= int(3 * READ_TIMEOUT / HEARTBEAT) - 2
    broadcaster.publish(SessionCreated(session_key="missed", agent_id="a1", kind="cron"))
    with sse(port, **{"Last-Event-ID": last_id}) as response:
        stream = EventStream(response)
        stream.next_event("welcome")
        message = stream.next_event("session.created")
        assert json.loads(message["data"])["payload"]["sessionKey"] == "missed"
