"""`livepanel doctor` against servers that lie: it reports, exits non-zero within its timeout,
never hangs and never shows a traceback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from livepanel.cli import main

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TIMEOUT = 1.0
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@contextlib.contextmanager
def serving(handler: Handler) -> Iterator[int]:
    """A raw TCP server on 127.0.0.1 running ``handler`` per connection; yields its port."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, asyncio.AbstractServer] = {}

    async def start() -> None:
        holder["server"] = await asyncio.start_server(handler, "127.0.0.1", 0)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(5)
    assert started.wait(5)
    try:
        yield holder["server"].sockets[0].getsockname()[1]
    finally:

        async def stop() -> None:
            holder["server"].close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def read_request(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    await reader.readline()
    for _ in range(100):
        line = (await reader.readline()).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


async def web_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Not livepanel: every request gets an HTML page."""
    await read_request(reader)
    body = b"<html><body>hello</body></html>"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n")
    writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


def silent_websocket(welcome: dict[str, object] | None) -> Handler:
    """Answers a plain GET with 426 like livepanel; accepts an upgrade, then sends ``welcome``
    (if any) and nothing else, ever."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers = await read_request(reader)
        key = headers.get("sec-websocket-key")
        if key is None:
            writer.write(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        if welcome is not None:
            data = json.dumps(welcome).encode()
            writer.write(bytes([0x81, len(data)]) + data if len(data) < 126 else b"")
        await writer.drain()
        await asyncio.sleep(3600)

    return handle


async def slowloris(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request one byte every 0.2 s, for ever."""
    await read_request(reader)
    for byte in b"HTTP/1.1 426 Upgrade Required\r\n" + b"X-Slow: " + b"z" * 100_000:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.2)


def run_doctor(port: int, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    status = main(["doctor", f"http://127.0.0.1:{port}/ws", "--timeout", str(TIMEOUT)])
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, took


def test_a_web_page_is_not_a_livepanel_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    """A plain web server: named as not a livepanel endpoint, exit 1 at once."""
    with serving(web_page) as port:
        status, out, took = run_doctor(port, capsys)
    assert status == 1
    assert "FAIL  endpoint     not a livepanel endpoint" in out
    assert took < 5 * TIMEOUT


def test_a_websocket_that_accepts_and_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """Accepted, then silence: no welcome is a failure within the timeout, no hang."""
    with serving(silent_websocket(None)) as port:
        status, out, took = run_doctor(port, capsys)
    assert status == 1
    assert "accepted but no welcome came within 1s" in out
    assert took < 10 * TIMEOUT


@pytest.mark.parametrize("interval", [float("nan"), -5, "25", None, 0])
def test_a_welcome_that_lies_about_its_heartbeat(
    interval: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """A welcome with no usable heartbeatInterval is named; doctor does not wait on it."""
    welcome = {"type": "welcome", "payload": {"heartbeatInterval": interval}}
    with serving(silent_websocket(welcome)) as port:
        status, out, took = run_doctor(port, capsys)
    assert status == 1
    assert "welcome announces no heartbeat" in out
    assert took < 10 * TIMEOUT


def test_a_slowloris_server_is_given_up_on_in_time(capsys: pytest.CaptureFixture[str]) -> None:
    """An answer that trickles in byte by byte is cut at the timeout and reported."""
    with serving(slowloris) as port:
        status, out, took = run_doctor(port, capsys)
    assert status == 1
    assert "did not answer a plain GET within 1s" in out
    assert took < 5 * TIMEOUT


def test_nothing_listening(capsys: pytest.CaptureFixture[str]) -> None:
    """A closed port is a finding, not a traceback."""
    from tests.servers import free_port

    status, out, _ = run_doctor(free_port(), capsys)
    assert status == 1
    assert "FAIL  endpoint     cannot reach" in out


def test_options_that_make_no_sense_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """A password in the URL, --password-env without -u, a zero timeout: exit 2."""
    assert main(["doctor", "https://u:p@example.invalid/ws"]) == 2
    assert main(["doctor", "https://example.invalid/ws", "--password-env", "X"]) == 2
    assert main(["doctor", "https://example.invalid/ws", "--timeout", "0"]) == 2
    assert main(["doctor", "ftp://example.invalid/ws"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_server_clock_an_hour_behind_is_found(capsys: pytest.CaptureFixture[str]) -> None:
    """welcome's timestamp an hour old: the skew is named with its fix."""
    welcome = {
        "type": "welcome",
        "timestamp": "2020-01-01T00:00:00.000Z",
        "payload": {"heartbeatInterval": 0.2},
    }
    with serving(silent_websocket(welcome)) as port:
        status, out, _ = run_doctor(port, capsys)
    assert status == 1
    assert "FAIL  clock" in out
    assert "behind this machine's (welcome's timestamp); fix: synchronise the clocks" in out


def test_an_endpoint_that_accepts_any_origin_is_found(capsys: pytest.CaptureFixture[str]) -> None:
    """A real livepanel with allowed_origins=["*"]: a foreign Origin is not refused."""
    from livepanel import Broadcaster, LivePanelApp
    from tests.servers import run_server

    app = LivePanelApp(Broadcaster(), auth=None, allowed_origins=["*"], heartbeat_interval=0.3)
    with run_server(app, "uvicorn-websockets") as server:
        status, out, _ = run_doctor(server.port, capsys)
    assert status == 1
    assert "FAIL  origin       a handshake from Origin https://doctor.livepanel.invalid" in out
    assert "ok    upgrade" in out
