"""The admission rate on real servers: 429 with Retry-After beyond it (1013 and a hint without
the HTTP extension), the probe told the same, and the clients it must hold off."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livepanel import BasicAuth, Broadcaster, LivePanelApp, LivePanelMiddleware
from tests.conftest import LogCapture
from tests.integration.helpers import (
    AUTH,
    Serve,
    admin_only,
    assert_refused,
    basic,
    expect_welcome,
    open_ws,
    refusal,
    wait_until,
)
from tests.servers import run_server

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, no proxy


def retry_after(refused: InvalidStatus) -> int:
    """The whole seconds of a refusal's Retry-After header (at least 1)."""
    value = refused.response.headers["retry-after"]
    assert re.fullmatch(r"[1-9]\d*", value), value
    return int(value)


class Accepts:
    """Wraps an app and notes when each WebSocket was accepted and each 429 sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.accepted: list[float] = []
        self.over_rate = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def noting(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept":
                self.accepted.append(time.monotonic())
            elif message.get("status") == 429:
                self.over_rate += 1
            await send(message)

        await self.app(scope, receive, noting)

    def most_in_one_second(self) -> int:
        times = sorted(self.accepted)
        most, start = 0, 0
        for end, t in enumerate(times):
            while times[start] <= t - 1.0:
                start += 1
            most = max(most, end - start + 1)
        return most


def users(*names: str) -> BasicAuth:
    """Accepts each of ``names`` with the password ``pw``."""
    return BasicAuth(lambda u, p: u if u in names and p == "pw" else None)


def probe(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A plain GET of the endpoint, as a browser's client makes after a failed connect."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with OPENER.open(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, {}
    except urllib.error.HTTPError as error:
        lowered = {k.lower(): v for k, v in error.headers.items()}
        return error.code, lowered, json.loads(error.read() or b"{}")


# ---------------------------------------------------------------------- what is said


def test_over_the_rate_a_handshake_is_refused_with_429_and_retry_after(
    serve: Serve, server_logs: LogCapture
) -> None:
    """A second handshake within the same second as the first (rate 0.5/s, burst 1) gets
    429 over_rate with Retry-After in whole seconds; after waiting it, it is admitted."""
    endpoint = LivePanelApp(Broadcaster(), auth=admin_only(), admission_rate=0.5)
    server = serve(endpoint)
    with open_ws(server) as ws:
        expect_welcome(ws)
        refused = refusal(server)
        assert_refused(refused, 429, "over_rate")
        wait = retry_after(refused)
        assert wait == 2  # the next slot, 1 / rate after the first
        time.sleep(wait + 0.05)
        with open_ws(server) as again:
            expect_welcome(again)
    assert endpoint.handshakes == {101: 2, 429: 1}
    assert server_logs.errors() == []


def test_the_probe_is_told_429_while_over_the_rate_and_takes_no_token(
    serve: Serve, server_logs: LogCapture
) -> None:
    """A plain GET while the worker is over its rate is answered 429 with Retry-After; a
    probe takes no token and reserves nothing (426 once the rate allows)."""
    endpoint = LivePanelApp(Broadcaster(), auth=admin_only(), admission_rate=1.0)
    server = serve(endpoint)
    url = f"{server.http_url}/ws"
    status, _, _ = probe(url, AUTH)
    assert status == 426
    limiter = endpoint._slots.admission
    assert limiter is not None
    assert limiter.admitted == 0
    with open_ws(server) as ws:
        expect_welcome(ws)
        status, headers, body = probe(url, AUTH)
        assert (status, body["error"]) == (429, "over_rate")
        assert int(headers["retry-after"]) >= 1
        assert limiter.promised == 0
        assert limiter.admitted == 1
        wait_until(lambda: probe(url, AUTH)[0] == 426, timeout=3, what="the probe to pass")
    assert server_logs.errors() == []


def test_without_the_http_extension_the_refusal_is_close_1013_with_a_retry_hint(
    serve: Serve, server_logs: LogCapture
) -> None:
    """Where the server cannot answer a handshake over HTTP, a refusal over the rate is an
    accept then close 1013 with the reason retry_after=<seconds>, in hundredths."""
    endpoint = LivePanelApp(Broadcaster(), auth=admin_only(), admission_rate=0.5)

    async def without_extension(scope: Any, receive: Any, send: Any) -> None:
        await endpoint({**scope, "extensions": {}}, receive, send)

    server = serve(without_extension)
    with open_ws(server) as ws:
        expect_welcome(ws)
        with open_ws(server) as refused:
            with pytest.raises(ConnectionClosed) as closed:
                refused.recv(timeout=5)
    frame = closed.value.rcvd
    assert frame is not None
    assert frame.code == 1013
    match = re.fullmatch(r"retry_after=(\d+\.\d\d)", frame.reason)
    assert match, frame.reason
    assert 1.0 <= float(match[1]) <= 2.0, frame.reason
    assert endpoint.handshakes == {101: 1, 429: 1}
    assert server_logs.errors() == []


# ---------------------------------------------------------------------- its adversaries


def test_refused_credentials_spend_no_token_so_guessing_locks_nobody_out(
    serve: Serve, server_logs: LogCapture
) -> None:
    """The rate is consulted after authentication: a flood of handshakes without a valid
    login (401 each) leaves the budget whole, and the user with one gets in at once."""
    endpoint = LivePanelApp(
        Broadcaster(), auth=admin_only(), admission_rate=1.0, auth_failure_limit=None
    )
    server = serve(endpoint)
    for n in range(60):
        headers = {"Authorization": basic("admin", f"guess-{n}")} if n % 2 else None
        assert refusal(server, headers=headers).response.status_code == 401
    with open_ws(server) as ws:
        expect_welcome(ws)
    assert endpoint.handshakes == {401: 60, 101: 1}
    assert server_logs.errors() == []


def test_a_client_that_hammers_keeps_getting_429_while_others_get_in_at_the_rate(
    server_logs: LogCapture,
) -> None:
    """One login hammers (ignoring Retry-After) while ten others connect and honour it:
    the ten all get in, the hammerer is refused nearly every time, nobody is told to wait
    more than max_wait, and no second holds more accepts than the rate allows."""
    names = [f"user{n}" for n in range(10)]
    endpoint = LivePanelApp(
        Broadcaster(), auth=users("mallory", *names), admission_rate=5.0, admission_burst=1
    )
    watched = Accepts(endpoint)
    outcomes: dict[str, float] = {}
    hammer = {"tries": 0, "refused": 0, "longest": 0}
    stop = threading.Event()
    with run_server(watched, "uvicorn-websockets") as server:

        def hammering() -> None:
            headers = {"Authorization": basic("mallory", "pw")}
            while not stop.is_set() and hammer["tries"] < 2000:
                hammer["tries"] += 1
                try:
                    with open_ws(server, headers=headers):
                        pass  # in: it leaves at once, and comes back
                except InvalidStatus as refused:
                    hammer["refused"] += 1
                    hammer["longest"] = max(hammer["longest"], retry_after(refused))

        def honest(name: str) -> None:
            began = time.monotonic()
            headers = {"Authorization": basic(name, "pw")}
            for _ in range(20):
                try:
                    with open_ws(server, headers=headers) as ws:
                        expect_welcome(ws)
                        outcomes[name] = time.monotonic() - began
                        return
                except InvalidStatus as refused:
                    time.sleep(min(retry_after(refused), 10))

        attacker = threading.Thread(target=hammering)
        attacker.start()
        time.sleep(0.3)  # the hammering is under way
        threads = [threading.Thread(target=honest, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        stop.set()
        attacker.join(10)
    assert sorted(outcomes) == sorted(names)
    assert max(outcomes.values()) < 10, outcomes
    assert hammer["refused"] >= 0.8 * hammer["tries"], hammer
    assert hammer["longest"] <= 60
    assert watched.most_in_one_second() <= 5 * 1.2, watched.most_in_one_second()
    assert server_logs.errors() == []


def test_a_slow_verifier_does_not_let_a_herd_past_the_rate(server_logs: LogCapture) -> None:
    """With a verifier that takes half a second, twenty handshakes at once are verified
    together, then admitted at the rate (2/s, burst 1) as each comes back when told."""

    async def slow(username: str, password: str) -> str | None:
        await asyncio.sleep(0.5)
        return username if password == "pw" else None

    endpoint = LivePanelApp(
        Broadcaster(), auth=BasicAuth(slow), admission_rate=4.0, admission_burst=1
    )
    watched = Accepts(endpoint)
    admitted: list[str] = []
    with run_server(watched, "uvicorn-wsproto") as server:

        def dashboard(n: int) -> None:
            headers = {"Authorization": basic(f"viewer{n}", "pw")}
            for _ in range(20):
                try:
                    with open_ws(server, headers=headers) as ws:
                        expect_welcome(ws)
                        admitted.append(f"viewer{n}")
                        return
                except InvalidStatus as refused:
                    time.sleep(min(retry_after(refused), 10))

        threads = [threading.Thread(target=dashboard, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(40)
    assert len(admitted) == 20
    assert watched.over_rate >= 10  # most were told to come back
    assert watched.most_in_one_second() <= 4 * 1.2 + 1e-9, watched.most_in_one_second()
    assert server_logs.errors() == []


# ---------------------------------------------------------------------- through the Quickstart


@pytest.fixture
def quickstart() -> Iterator[tuple[Any, LivePanelApp]]:
    """The Quickstart's shape: FastAPI, the endpoint through app.add_middleware with
    audiences, connection limits and metrics on too, and a host middleware added last that
    wraps everything and tags every response."""
    from fastapi import FastAPI

    app = FastAPI()
    endpoint = LivePanelApp(
        Broadcaster(),
        auth=admin_only(),
        audiences=lambda principal, scope: {f"user:{principal}"},
        max_connections_per_user=5,
        admission_rate=0.5,
        reconnect_window=3.0,
    )
    app.add_middleware(LivePanelMiddleware, path="/ws", endpoint=endpoint)

    @app.get("/api/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    async def tagged(scope: Any, receive: Any, send: Any) -> None:
        async def tagging(message: dict[str, Any]) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                message = {**message, "headers": [*message["headers"], (b"x-host", b"yes")]}
            await send(message)

        await app(scope, receive, tagging)

    return tagged, endpoint


def test_through_the_quickstart_middleware_the_429_and_the_1012_hint_pass(
    quickstart: tuple[Any, LivePanelApp], server_logs: LogCapture
) -> None:
    """Wrapped by the host's middleware: an over-rate handshake, an event stream and a probe
    get 429 with Retry-After, counted in the metrics; a shutdown closes with 1012 and
    retry_after within the window."""
    from prometheus_client import CollectorRegistry

    from livepanel.metrics import instrument

    app, endpoint = quickstart
    registry = CollectorRegistry()
    instrument(endpoint.broadcaster, app=endpoint, registry=registry)
    with run_server(app, "uvicorn-websockets", lifespan=True) as server:
        with open_ws(server) as ws:
            expect_welcome(ws)
            refused = refusal(server)
            assert_refused(refused, 429, "over_rate")
            assert refused.response.headers["x-host"] == "yes"
            assert retry_after(refused) >= 1
            status, headers, body = probe(
                f"{server.http_url}/ws", {**AUTH, "Accept": "text/event-stream"}
            )
            assert (status, body["error"], headers["x-host"]) == (429, "over_rate", "yes")
            assert int(headers["retry-after"]) >= 1
            refused_count = registry.get_sample_value(
                "livepanel_handshakes_total", {"status": "429"}
            )
            assert refused_count == 2  # the WebSocket and the event stream
            loop = endpoint.broadcaster.backend_loop
            assert loop is not None
            asyncio.run_coroutine_threadsafe(endpoint.shutdown(), loop).result(5)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
    frame = closed.value.rcvd
    assert frame is not None
    assert (frame.code, frame.reason) == (1012, "retry_after=1.50")
    assert server_logs.errors() == []
