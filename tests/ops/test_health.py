"""Health: ok, draining, unreachable, and a deaf reader on a Redis that answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from livepanel import Broadcaster, LivePanelApp, health_app
from tests.faults.helpers import server_processes
from tests.integration.helpers import admin_only, close_code, expect_welcome, open_ws, recv_json
from tests.ops.helpers import ReaderFreezer
from tests.redis.redis_helpers import RedisServer, free_port, run, started
from tests.servers import run_server

ROOT = Path(__file__).parents[2]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
STALL_AFTER = 1.5


def get_health(base: str, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
    """GET <base>/healthz: the status and the JSON body (200 and 503 alike)."""
    try:
        with OPENER.open(f"{base}{path}", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as refused:
        return refused.code, json.load(refused)


def post(base: str, path: str) -> Any:
    request = urllib.request.Request(f"{base}{path}", method="POST")
    with OPENER.open(request, timeout=10) as response:
        return json.load(response)


def test_a_memory_broadcaster_is_healthy() -> None:
    """In one process there is nothing to trail: ok, lag 0, not draining."""

    async def scenario() -> dict[str, Any]:
        async with started(Broadcaster()) as broadcaster:
            return await broadcaster.health()

    assert run(scenario()) == {
        "ok": True,
        "backend": "ok",
        "readerLagSeconds": 0.0,
        "connections": 0,
        "draining": False,
        "dashboards": "ok",
        "ackLag": {"acking": 0, "behind": 0, "maxSeconds": 0.0, "limitSeconds": 30.0},
        "reason": None,
    }


def test_health_app_answers_503_while_the_endpoint_drains() -> None:
    """After LivePanelApp.shutdown() began, the check says draining, with 503."""
    broadcaster = Broadcaster()
    endpoint = LivePanelApp(broadcaster, auth=admin_only(), shutdown_signals=())
    check = health_app(broadcaster)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        target = check if scope["path"] == "/healthz" else endpoint
        await target(scope, receive, send)

    with run_server(app, "uvicorn-websockets") as server:
        with open_ws(server) as ws:
            expect_welcome(ws)
            status, body = get_health(server.http_url)
            assert (status, body["ok"], body["connections"]) == (200, True, 1)
            future = endpoint_shutdown(endpoint, broadcaster)
            assert close_code(ws) == 1012
            future.result(5)
        status, body = get_health(server.http_url)
        assert status == 503
        assert body == {
            "ok": False,
            "backend": "ok",
            "readerLagSeconds": 0.0,
            "connections": 0,
            "draining": True,
            "dashboards": "ok",
            "ackLag": {"acking": 0, "behind": 0, "maxSeconds": 0.0, "limitSeconds": 30.0},
            "reason": "this process is shutting down",
        }


def endpoint_shutdown(endpoint: LivePanelApp, broadcaster: Broadcaster) -> Any:
    """Run ``endpoint.shutdown()`` on the broadcaster's loop (the server's)."""
    loop = broadcaster.backend_loop
    assert loop is not None
    return asyncio.run_coroutine_threadsafe(endpoint.shutdown(), loop)


@pytest.mark.redis
def test_an_unreachable_redis_is_reported_without_a_lag() -> None:
    """Nothing listens where Redis should be: 'unreachable', no lag, not ok."""

    async def scenario() -> dict[str, Any]:
        url = f"redis://127.0.0.1:{free_port()}/0"
        return await Broadcaster(url).health(timeout=0.5)

    report = run(scenario())
    assert report["ok"] is False
    assert report["backend"] == "unreachable"
    assert report["readerLagSeconds"] is None


@pytest.mark.redis
def test_liveness_ignores_an_unreachable_redis_and_a_drain() -> None:
    """health_app(liveness=True) answers 503 for a stalled reader only: a Redis outage or a
    drain is no reason to restart; the readiness check says 503 to both."""
    broadcaster = Broadcaster(f"redis://127.0.0.1:{free_port()}/0")
    ready = health_app(broadcaster, timeout=0.5)
    live = health_app(broadcaster, timeout=0.5, liveness=True)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await (live if scope["path"] == "/livez" else ready)(scope, receive, send)

    with run_server(app, "uvicorn-websockets") as server:
        assert get_health(server.http_url)[0] == 503
        status, body = get_health(server.http_url, "/livez")
        assert (status, body["backend"]) == (200, "unreachable")
        broadcaster.mark_draining()
        assert get_health(server.http_url, "/livez")[0] == 200


@pytest.mark.redis
def test_a_deaf_reader_turns_503_and_recovers_without_losing_an_event(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers on one Redis; one's reader connection freezes while the stream advances:
    its health turns 503 within the threshold, 200 after the thaw, and its client gets every
    event in order."""
    monkeypatch.setenv("TEST_STALL_AFTER", str(STALL_AFTER))
    (tmp_path / "deaf").mkdir()
    (tmp_path / "other").mkdir()
    with (
        ReaderFreezer(redis_server.port).running() as proxy,
        server_processes(["uvicorn-websockets"], tmp_path / "deaf", proxy.url) as [deaf],
        server_processes(["uvicorn-websockets"], tmp_path / "other", redis_server.url) as [other],
    ):
        deaf_base, other_base = (f"http://127.0.0.1:{s.port}" for s in (deaf, other))
        assert get_health(deaf_base)[0] == 200
        assert get_health(other_base)[0] == 200
        with connect(deaf.ws_url, proxy=None, open_timeout=5) as ws:
            expect_welcome(ws)
            proxy.freeze()
            post(other_base, "/publish?start=0&count=5")
            began = time.monotonic()
            while True:
                status, body = get_health(deaf_base)
                if status == 503:
                    break
                assert time.monotonic() - began < STALL_AFTER + 5, body
                time.sleep(0.1)
            noticed = time.monotonic() - began
            assert body["backend"] == "stalled", body
            assert body["ok"] is False
            assert body["readerLagSeconds"] >= STALL_AFTER
            assert body["connections"] == 1
            assert get_health(deaf_base, "/livez")[0] == 503  # a restart would cure this
            assert get_health(other_base)[0] == 200  # the other worker reads on
            post(other_base, "/publish?start=5&count=5")  # the stream goes on advancing

            proxy.thaw()
            thawed = time.monotonic()
            while get_health(deaf_base)[0] != 200:
                assert time.monotonic() - thawed < 15, get_health(deaf_base)
                time.sleep(0.1)
            assert get_health(deaf_base, "/livez")[0] == 200
            frames = [recv_json(ws, timeout=10) for _ in range(10)]
            assert [f["payload"]["n"] for f in frames] == list(range(10))
        assert proxy.readers_frozen >= 1
        print(f"deaf reader noticed after {noticed:.2f} s (threshold {STALL_AFTER} s)")


async def call(app: Any, scope: dict[str, Any], messages: list[dict[str, Any]]) -> list[Any]:
    """Drive an ASGI app with ``messages`` in; return what it sent."""
    sent: list[Any] = []
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_health_app_answers_head_refuses_other_methods_and_websockets() -> None:
    """HEAD: the status without a body; POST: 405 with Allow; a WebSocket: closed 1008; lifespan:
    completed."""
    check = health_app(Broadcaster())

    async def scenario() -> dict[str, list[Any]]:
        http = {"type": "http", "method": "HEAD", "path": "/healthz", "headers": []}
        return {
            "head": await call(check, http, []),
            "post": await call(check, {**http, "method": "POST"}, []),
            "websocket": await call(
                check, {"type": "websocket", "path": "/"}, [{"type": "websocket.connect"}]
            ),
            "lifespan": await call(
                check,
                {"type": "lifespan"},
                [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
            ),
        }

    sent = run(scenario())
    assert sent["head"][0]["status"] == 200
    assert sent["head"][1]["body"] == b""
    assert sent["post"][0]["status"] == 405
    assert (b"allow", b"GET, HEAD") in sent["post"][0]["headers"]
    assert sent["websocket"] == [{"type": "websocket.close", "code": 1008, "reason": ""}]
    assert [m["type"] for m in sent["lifespan"]] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


@pytest.mark.redis
def test_a_redis_reader_that_has_not_started_is_starting_then_ok(redis_url: str) -> None:
    """Health starts a lazy broadcaster: 'starting' (503) first, then 'ok'."""

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        broadcaster = Broadcaster(redis_url)
        try:
            first = await broadcaster.health()
            deadline = time.monotonic() + 5
            while (second := await broadcaster.health())["backend"] != "ok":
                assert time.monotonic() < deadline, second
                await asyncio.sleep(0.05)
            return first, second
        finally:
            await broadcaster.close()

    first, second = run(scenario())
    assert (first["ok"], first["backend"]) == (False, "starting")
    assert (second["ok"], second["readerLagSeconds"]) == (True, 0.0)


@pytest.mark.redis
def test_a_worker_cut_off_from_redis_turns_503_and_recovers_without_losing_an_event(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The proxy process between one worker and Redis is stopped with SIGSTOP while the other
    worker publishes: the cut-off worker answers 503 (unreachable), then 200 after SIGCONT,
    and its client gets every event in order."""
    port = free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "tests.ops.helpers", str(port), str(redis_server.port)],
        cwd=ROOT,
    )
    try:
        wait_until_accepts(port)
        (tmp_path / "cut").mkdir()
        (tmp_path / "other").mkdir()
        with (
            server_processes(
                ["uvicorn-websockets"], tmp_path / "cut", f"redis://127.0.0.1:{port}/0"
            ) as [cut],
            server_processes(["uvicorn-websockets"], tmp_path / "other", redis_server.url) as [
                other
            ],
            connect(cut.ws_url, proxy=None, open_timeout=5) as ws,
        ):
            expect_welcome(ws)
            cut_base, other_base = (f"http://127.0.0.1:{s.port}" for s in (cut, other))
            assert get_health(cut_base)[0] == 200
            proxy.send_signal(signal.SIGSTOP)
            post(other_base, "/publish?start=0&count=5")
            status, body = get_health(cut_base)
            assert (status, body["backend"], body["readerLagSeconds"]) == (503, "unreachable", None)
            assert get_health(cut_base, "/livez")[0] == 200  # no reason to restart
            post(other_base, "/publish?start=5&count=5")
            proxy.send_signal(signal.SIGCONT)
            thawed = time.monotonic()
            while get_health(cut_base)[0] != 200:
                assert time.monotonic() - thawed < 20, get_health(cut_base)
                time.sleep(0.1)
            frames = [recv_json(ws, timeout=15) for _ in range(10)]
            assert [f["payload"]["n"] for f in frames] == list(range(10))
    finally:
        proxy.send_signal(signal.SIGCONT)
        proxy.kill()
        proxy.wait(5)


def wait_until_accepts(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.02)
