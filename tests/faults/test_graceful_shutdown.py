"""Stopping a server: every open connection is closed with 1012 (service restart) and a
``retry_after=<seconds>`` hint, the hints spread over ``reconnect_window``, and a client
resumes on another worker with ``since``, losing nothing.

The servers run as real processes and get a real SIGTERM. What each does, and why
livepanel listens for the signal, is in docs/shutdown.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from livepanel import Broadcaster, LivePanelApp
from livepanel.client import connect as livepanel_connect
from livepanel.shutdown import SIGNAL_GRACE
from tests.client.helpers import FAST, Collector
from tests.faults.helpers import Balancer, ServerProcess, server_processes, tracebacks
from tests.integration.helpers import expect_welcome
from tests.redis.redis_helpers import RedisServer, Tick, run

PROMPT = ["uvicorn-wsproto", "uvicorn-websockets", "uvicorn-websockets-sansio", "hypercorn-0"]


def close_frame(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, str]:
    """Read until the server closes; the close code and reason it sent."""
    for _ in range(100):
        try:
            ws.recv(timeout=timeout)
        except ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd is not None else (None, "")
    raise AssertionError("the server did not close within 100 frames")


def hints(reasons: list[str]) -> list[float]:
    """The seconds of each ``retry_after=<seconds>`` reason, sorted."""
    assert all(re.fullmatch(r"retry_after=\d+\.\d\d", r) for r in reasons), reasons
    return sorted(float(r.partition("=")[2]) for r in reasons)


def clients(stack: ExitStack, server: ServerProcess, count: int) -> list[ClientConnection]:
    """``count`` open connections to ``server``, welcomed; closed when ``stack`` ends."""
    opened = []
    for _ in range(count):
        ws = stack.enter_context(connect(server.ws_url, proxy=None, open_timeout=5))
        expect_welcome(ws)
        opened.append(ws)
    return opened


def stream_until_end(stream: Iterator[str]) -> list[str]:
    """The lines still to come of an event stream, to its end (the server ended it)."""
    lines = []
    for line in stream:
        lines.append(line)
        if len(lines) > 1000:
            raise AssertionError("the stream did not end")
    return lines


@pytest.mark.parametrize("kind", ["uvicorn-websockets-sansio", "hypercorn-0"])
def test_sigterm_ends_event_streams_each_with_a_retry_field_spread_over_the_window(
    kind: str, tmp_path: Path
) -> None:
    """An event stream has no close code: on SIGTERM each stream's last words are a
    ``retry:`` field (milliseconds, what an EventSource waits before it reconnects), the
    five of them spread over the reconnect window as the WebSocket hints are."""
    with server_processes([kind], tmp_path) as (server,), ExitStack() as stack:
        client = stack.enter_context(httpx.Client(timeout=httpx.Timeout(10.0), trust_env=False))
        streams = []
        for _ in range(5):
            request = client.stream("GET", server.ws_url, headers={"Accept": "text/event-stream"})
            response = stack.enter_context(request)
            assert response.status_code == 200
            streams.append(response.iter_lines())
        welcomes = [next(stream) for stream in streams]
        assert welcomes == ["event: welcome"] * 5
        server.signal(signal.SIGTERM)
        tails = [stream_until_end(stream) for stream in streams]
        server.wait()
    retries = [[line for line in tail if line.startswith("retry:")] for tail in tails]
    assert all(len(found) == 1 for found in retries), retries
    assert sorted(int(found[0].partition(": ")[2]) for found in retries) == [
        500,
        1500,
        2500,
        3500,
        4500,
    ]
    assert not tracebacks(server), server.output()


@pytest.mark.parametrize("kind", PROMPT)
def test_sigterm_closes_every_connection_with_1012_at_once(kind: str, tmp_path: Path) -> None:
    """On SIGTERM every client gets close 1012 within a second, each told a different time
    to come back, spread over the default reconnect_window (5 s), and the server exits
    cleanly (uvicorn; hypercorn with the app in its main process, --workers 0)."""
    with server_processes([kind], tmp_path) as (server,), ExitStack() as stack:
        opened = clients(stack, server, 5)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        frames = [close_frame(ws, timeout=5) for ws in opened]
        elapsed = time.monotonic() - signalled
        server.wait()
    assert [code for code, _ in frames] == [1012] * 5
    assert hints([reason for _, reason in frames]) == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert elapsed < 2.5, f"closed {elapsed:.2f} s after the signal"
    assert not tracebacks(server), server.output()


def test_hypercorn_worker_processes_close_with_1012_after_the_graceful_timeout(
    tmp_path: Path,
) -> None:
    """hypercorn's worker processes get no signal (the parent sets an event): connections
    stay open for --graceful-timeout, then livepanel closes them with 1012, not 1011, each
    told a different time to come back."""
    with server_processes(["hypercorn"], tmp_path) as (server,), ExitStack() as stack:
        opened = clients(stack, server, 3)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        frames = [close_frame(ws, timeout=10) for ws in opened]
        elapsed = time.monotonic() - signalled
        server.wait()
    assert [code for code, _ in frames] == [1012] * 3
    spread = hints([reason for _, reason in frames])
    assert len(set(spread)) == 3, spread
    assert all(0 < h < 5 for h in spread), spread
    assert 0.5 < elapsed < 5, f"closed {elapsed:.2f} s after the signal (graceful timeout 1 s)"
    assert "Error in ASGI Framework" not in server.output()
    assert not tracebacks(server), server.output()


SIGNAL_SCRIPT = """
import asyncio, json, os, signal, sys
from livepanel import shutdown

calls = []
def server(sig, frame):
    calls.append(["server", sig])

class App:
    async def shutdown(self, code=1012, timeout=5.0):
        calls.append(["app", code])
        if sys.argv[1] == "stuck":
            await asyncio.sleep(60)  # a connection that never closes

async def main():
    app = App()
    if sys.argv[2] == "handled":
        signal.signal(signal.SIGTERM, server)
    watch = shutdown.SignalWatch(app, (signal.SIGTERM,))
    watch.install()
    chained = signal.getsignal(signal.SIGTERM) == watch._on_signal
    loop = asyncio.get_running_loop()
    began = loop.time()
    for n in range(int(sys.argv[3])):
        os.kill(os.getpid(), signal.SIGTERM)
        while not calls and loop.time() < began + 5:  # the drain has begun
            await asyncio.sleep(0.01)
    signals = int(sys.argv[3]) if sys.argv[2] == "handled" else 0
    while sum(c[0] == "server" for c in calls) < signals and loop.time() < began + 10:
        await asyncio.sleep(0.01)
    print(json.dumps({"chained": chained, "calls": calls, "took": loop.time() - began}))

asyncio.run(main())
"""


def signal_run(*args: str) -> dict[str, Any]:
    """Run SIGNAL_SCRIPT in a process of its own (signals belong to the main thread)."""
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_SCRIPT, *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_on_the_signal_the_app_closes_first_then_the_servers_handler_runs() -> None:
    """The handler livepanel chains calls app.shutdown(1012), then the server's own handler."""
    result = signal_run("prompt", "handled", "1")
    assert result["chained"] is True
    assert result["calls"] == [["app", 1012], ["server", 15]]
    assert result["took"] < 1.5


def test_an_app_that_cannot_close_holds_the_server_up_for_signal_grace_at_most() -> None:
    """However long closing takes, the server's handler runs after SIGNAL_GRACE (2 s) + 0.5."""
    result = signal_run("stuck", "handled", "1")
    assert result["calls"] == [["app", 1012], ["server", 15]]
    assert SIGNAL_GRACE <= result["took"] < SIGNAL_GRACE + 2


def test_a_second_signal_during_the_drain_goes_straight_to_the_server() -> None:
    """A second SIGTERM (or Ctrl+C) while connections close is the server's at once."""
    result = signal_run("stuck", "handled", "2")
    assert result["calls"][:2] == [["app", 1012], ["server", 15]]
    assert result["calls"][2:] == [["server", 15]]  # the first one's turn, after the drain


def test_nothing_is_chained_where_no_server_handles_sigterm() -> None:
    """A script or a test under asyncio.run keeps its signals as they are."""
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_SCRIPT, "prompt", "default", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(done.stdout)["chained"] is False


@pytest.mark.redis
def test_clients_resume_on_another_worker_after_sigterm_with_nothing_lost(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers on one Redis stream behind a load balancer, eight clients on them, events
    flowing: SIGTERM one worker. Its clients are closed with 1012 and a hint each, wait it,
    reconnect through the balancer to the other worker with since, and every client has
    every event once, in order."""
    caplog.set_level(logging.INFO, logger="livepanel")
    count = 150
    with server_processes(["uvicorn-wsproto"] * 2, tmp_path, redis_server.url) as (a, b):

        async def scenario() -> list[Collector]:
            publisher = Broadcaster(redis_server.url)
            try:
                async with Balancer([a.port, b.port]).running() as balancer:
                    collectors, opened = [], []
                    for _ in range(8):
                        client = livepanel_connect(balancer.ws_url, max_retries=50, **FAST)
                        await client.__aenter__()
                        opened.append(client)
                        collectors.append(Collector(client))
                    assert balancer.routed == {a.port: 4, b.port: 4}
                    for n in range(count):
                        await publisher.apublish(Tick(n=n))
                        if n == 50:
                            a.signal(signal.SIGTERM)
                        await asyncio.sleep(0.005)  # a steady stream, not one burst
                    for collector in collectors:
                        await collector.wait_events(count, timeout=20)
                    for client, collector in zip(opened, collectors, strict=True):
                        await client.close()
                        await collector.task
                    return collectors
            finally:
                await publisher.close()

        collectors = run(scenario(), timeout=60)
        assert a.wait() is not None
    for collector in collectors:
        assert [e.payload["n"] for e in collector.events] == list(range(count))
        assert not collector.gaps
    reasons = [r.getMessage() for r in caplog.records if "come back in" in r.getMessage()]
    hinted = [r for r in reasons if "closed with code 1012" in r]
    assert len(hinted) == 4  # each client of the stopped worker waited its own hint
    waits = [float(m[1]) for r in hinted if (m := re.search(r"come back in ([\d.]+)s", r))]
    assert len(waits) == 4
    assert all(0 < w <= 5 * 1.2 for w in waits), waits
    assert not tracebacks(a)
    assert not tracebacks(b)


# ---------------------------------------------------------------------- the app's side, via ASGI


def websocket_scope() -> dict[str, Any]:
    return {
        "type": "websocket",
        "path": "/ws",
        "query_string": b"",
        "headers": [(b"host", b"panel.test")],
        "client": ("192.0.2.1", 1),
        "extensions": {"websocket.http.response": {}},
    }


class Peer:
    """One WebSocket connection to an app, spoken in ASGI messages."""

    def __init__(self, app: Any, scope: dict[str, Any] | None = None) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.inbox.put_nowait({"type": "websocket.connect"})
        scope = scope or websocket_scope()
        self.task = asyncio.ensure_future(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.changed.set()

    async def wait_for(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for message in self.sent:
                if message["type"] == kind:
                    return message
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - loop.time()))


def test_shutdown_closes_connections_with_1012_and_refuses_new_ones_with_503() -> None:
    """app.shutdown(): open connections get close 1012 with a retry hint; a new handshake gets 503
    shutting_down with Retry-After, until the next lifespan startup."""

    async def scenario() -> None:
        app = LivePanelApp(Broadcaster(), auth=None)
        first = Peer(app)
        await first.wait_for("websocket.accept")
        await app.shutdown()
        close = await first.wait_for("websocket.close")
        assert (close["code"], close["reason"]) == (1012, "retry_after=2.50")  # 1 of 1, 5 s
        await first.inbox.put({"type": "websocket.disconnect", "code": 1012})
        await asyncio.wait_for(first.task, 5)
        assert app.connection_count == 0
        late = Peer(app)
        start = await late.wait_for("websocket.http.response.start")
        assert start["status"] == 503
        assert (b"retry-after", b"1") in start["headers"]
        body = await late.wait_for("websocket.http.response.body")
        assert b"shutting_down" in body["body"]
        await asyncio.wait_for(late.task, 5)
        app._starting_up()  # what lifespan.startup does
        again = Peer(app)
        await again.wait_for("websocket.accept")
        await again.inbox.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(again.task, 5)
        await app.broadcaster.close()

    run(scenario(), timeout=20)


def test_shutdown_waits_for_connections_to_close_at_most_timeout() -> None:
    """shutdown(timeout=...) returns once every connection is released, or at the timeout."""

    async def scenario() -> None:
        app = LivePanelApp(Broadcaster(), auth=None)
        peers = [Peer(app) for _ in range(3)]
        for peer in peers:
            await peer.wait_for("websocket.accept")
        started = asyncio.get_running_loop().time()
        await app.shutdown(timeout=5)
        assert asyncio.get_running_loop().time() - started < 1
        assert app.connection_count == 0  # a close sent is a connection released
        await app.broadcaster.close()

    run(scenario(), timeout=20)


def test_middleware_closes_its_connections_before_the_app_sees_lifespan_shutdown() -> None:
    """LivePanelMiddleware passes lifespan on untouched, after closing its endpoint's
    connections with 1012, for servers that send lifespan.shutdown first."""
    from livepanel import LivePanelMiddleware

    seen: list[tuple[str, int]] = []

    async def host(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            seen.append((message["type"], middleware.endpoint.connection_count))
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    middleware = LivePanelMiddleware(host, path="/ws", auth=None)

    async def scenario() -> None:
        lifespan: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        replies: list[dict[str, Any]] = []

        async def reply(message: dict[str, Any]) -> None:
            replies.append(message)

        task = asyncio.ensure_future(middleware({"type": "lifespan"}, lifespan.get, reply))
        await lifespan.put({"type": "lifespan.startup"})
        peer = Peer(middleware)
        await peer.wait_for("websocket.accept")
        await lifespan.put({"type": "lifespan.shutdown"})
        assert (await peer.wait_for("websocket.close"))["code"] == 1012
        await asyncio.wait_for(task, 5)
        await peer.inbox.put({"type": "websocket.disconnect", "code": 1012})
        await asyncio.wait_for(peer.task, 5)
        await middleware.endpoint.broadcaster.close()

    run(scenario(), timeout=20)
    assert seen == [("lifespan.startup", 0), ("lifespan.shutdown", 0)]
