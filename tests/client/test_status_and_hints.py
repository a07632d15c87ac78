"""The Python client's statuses (catching_up included), staleness, and the server's retry
hints: a 429 with Retry-After, a close 1012/1013 with ``retry_after=<s>``; hostile hints never
make it spin or hang."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from wsproto.events import CloseConnection

from livepanel import Broadcaster, LivePanelApp
from livepanel.client import ConnectionFailed, HandshakeRejected, connect
from livepanel.client.retry import MAX_HINT, close_hint, hinted_wait, retry_after_header
from livepanel.client.stream import ClientStream
from livepanel.client.wire import FrameReceived
from livepanel.events import SessionCreated
from tests.client.helpers import FAST, Collector, Peer, ScriptedServer, event, run, served, welcome

# --------------------------------------------------------------------------- hints, without I/O


@pytest.mark.parametrize(
    ("code", "reason", "hint"),
    [
        (1012, "retry_after=2", 2.0),
        (1013, "retry_after=0.75", 0.75),
        (1013, "shutting down; retry_after=3.5", 3.5),
        (1012, "retry_after=-5", None),
        (1012, "retry_after=NaN", None),
        (1012, "retry_after=1e309", None),
        (1012, "retry_after=inf", None),
        (1013, "retry_after=", None),
        (1013, "retry_after=2x", None),
        (1013, "junk", None),
        (1011, "retry_after=2", None),
        (1000, "retry_after=2", None),
    ],
)
def test_a_close_reason_gives_a_hint_only_when_it_is_a_finite_number(
    code: int, reason: str, hint: float | None
) -> None:
    """``retry_after=<decimal>`` on 1012/1013 is a hint; anything else is none."""
    assert close_hint(code, reason) == hint


@pytest.mark.parametrize(
    ("value", "hint"),
    [("3", 3.0), (" 10 ", 10.0), ("-1", None), ("1.5", None), ("NaN", None), ("", None)],
)
def test_retry_after_counts_whole_seconds_only(value: str, hint: float | None) -> None:
    """A Retry-After of whole seconds is a hint; a date, a fraction or junk is none."""
    assert retry_after_header(value) == hint


def test_a_hinted_wait_adds_jitter_and_is_capped() -> None:
    """Hint + jitter in [0, max(0.25, 20 %)], never beyond MAX_HINT seconds."""
    for _ in range(200):
        assert 0.0 <= hinted_wait(0.0) <= 0.25
        assert 10.0 <= hinted_wait(10.0) <= 12.0
        assert hinted_wait(10_000.0) == MAX_HINT
    assert len({round(hinted_wait(1.0), 6) for _ in range(50)}) > 1  # it is spread


# --------------------------------------------------------------------------- statuses, no I/O


def test_a_replay_is_catching_up_until_the_newest_event_at_welcome() -> None:
    """since before welcome.lastEventId: catching_up until that event arrives, then open."""
    seen: list[str] = []
    stream = ClientStream("ws://x/ws", since="e1:1", on_status=seen.append)
    stream.begin()
    stream.receive(FrameReceived(welcome("e1:3")), now=0.0)
    assert stream.status == "catching_up"
    stream.receive(FrameReceived(event("e1:2")), now=0.1)
    assert stream.status == "catching_up"
    stream.receive(FrameReceived(event("e1:3")), now=0.2)
    assert stream.status == "open"
    assert seen == ["catching_up", "open"]


def test_nothing_to_replay_is_open_at_once() -> None:
    """since equal to welcome.lastEventId, or no since: open straight after welcome."""
    for since in ("e1:3", None):
        stream = ClientStream("ws://x/ws", since=since)
        stream.begin()
        stream.receive(FrameReceived(welcome("e1:3")), now=0.0)
        assert stream.status == "open"


def test_a_heartbeat_or_resume_unavailable_ends_catching_up() -> None:
    """A ping comes only once nothing is queued; resume_unavailable means no replay comes."""
    ping = {"type": "ping", "payload": {}}
    gone = {"type": "error", "payload": {"code": "resume_unavailable", "message": ""}}
    for frame in (ping, gone):
        stream = ClientStream("ws://x/ws", since="e1:1")
        stream.begin()
        stream.receive(FrameReceived(welcome("e1:3")), now=0.0)
        stream.receive(FrameReceived(frame), now=0.1)
        assert stream.status == "open"


def test_state_on_connect_is_catching_up_until_the_state_frame() -> None:
    """With state=True the client catches up until the state frame is in."""
    stream = ClientStream("ws://x/ws", state=True)
    stream.begin()
    stream.receive(FrameReceived(welcome("e1:3")), now=0.0)
    assert stream.status == "catching_up"
    state = {"type": "state", "payload": {"lastEventId": "e1:3", "collections": {}, "types": {}}}
    stream.receive(FrameReceived(state), now=0.1)
    assert stream.status == "open"


def test_a_failing_status_callback_does_not_break_the_client() -> None:
    """A callback that raises is logged; the stream goes on."""

    def broken(status: str) -> None:
        raise RuntimeError("boom")

    stream = ClientStream("ws://x/ws", on_status=broken)
    stream.begin()
    stream.receive(FrameReceived(welcome("e1:3")), now=0.0)
    assert stream.status == "open"


# --------------------------------------------------------------------------- a real livepanel


def test_statuses_and_staleness_through_a_real_server() -> None:
    """Resuming behind: connecting, catching_up, open; staleness grows on a silent stream."""
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=None, heartbeat_interval=5.0)

    async def scenario() -> None:
        async with served(app, "uvicorn-websockets") as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            first = await broadcaster.apublish(
                SessionCreated(session_key="s0", agent_id="a1", kind="direct")
            )
            for n in range(1, 4):
                await broadcaster.apublish(
                    SessionCreated(session_key=f"s{n}", agent_id="a1", kind="direct")
                )
            seen: list[str] = []
            client = connect(url, since=first.id, on_status=seen.append, **FAST)
            assert client.staleness is None
            async with client:
                collector = Collector(client)
                await collector.wait_events(3)
                await collector.wait_until(lambda: client.status == "open")
                assert seen == ["catching_up", "open"]
                await asyncio.sleep(0.4)
                staleness = client.staleness
                assert staleness is not None
                assert staleness >= 0.3
                await broadcaster.apublish(
                    SessionCreated(session_key="s4", agent_id="a1", kind="direct")
                )
                await collector.wait_events(4)
                assert client.staleness is not None
                assert client.staleness < staleness
            await collector.task
            assert seen[-1] == "closed"

    run(scenario())


# --------------------------------------------------------------------------- hints, real server


class HintingApp:
    """A tiny ASGI app: the n-th WebSocket handshake gets ``plan[n]``: ``"429"`` (refused with
    Retry-After: 1), ``"1012"`` (welcomed, an event, closed 1012 with retry_after=0.5), or
    ``"stay"`` (welcomed, an event, then held open). It records each query string."""

    def __init__(self, plan: list[str]) -> None:
        self.plan = plan
        self.queries: list[str] = []
        self.times: list[float] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        n = len(self.queries)
        self.queries.append(scope["query_string"].decode())
        self.times.append(time.monotonic())
        step = self.plan[min(n, len(self.plan) - 1)]
        await receive()  # websocket.connect
        if step == "429":
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 429,
                    "headers": [(b"retry-after", b"1"), (b"content-type", b"application/json")],
                }
            )
            body = b'{"error": "too_many_connections", "message": "come back later"}'
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send({"type": "websocket.accept"})
        newest = f"e1:{n + 1}"  # welcome names the event that follows it: a replay of one
        await send({"type": "websocket.send", "text": json.dumps(welcome(newest, heartbeat=5.0))})
        await send({"type": "websocket.send", "text": json.dumps(event(newest))})
        if step == "1012":
            await send({"type": "websocket.close", "code": 1012, "reason": "retry_after=0.5"})
            return
        while (await receive())["type"] != "websocket.disconnect":
            pass


def test_a_close_1012_with_a_hint_is_waited_out_and_not_counted() -> None:
    """1012 retry_after=0.5 three times with max_retries=1: the client waits ~0.5 s each time,
    never gives up, and resumes with since."""
    app = HintingApp(["1012", "1012", "1012", "stay"])

    async def scenario() -> None:
        async with served(app, "uvicorn-websockets") as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with connect(url, **{**FAST, "max_retries": 1}) as client:
                collector = Collector(client)
                await collector.wait_events(4, timeout=10)
                assert client.reconnects == 3
                assert client.status == "open"
        gaps = [b - a for a, b in zip(app.times, app.times[1:], strict=False)]
        assert all(0.5 <= gap <= 0.5 + 0.25 + 1.0 for gap in gaps), gaps
        assert [q for q in app.queries[1:] if "since=e1%3A" in q or "since=e1:" in q]
        assert "since=e1:1" in app.queries[1] or "since=e1%3A1" in app.queries[1]

    run(scenario())


async def open_and_wait(app: HintingApp, *, max_retries: int, events: int) -> None:
    """Connect to ``app`` on uvicorn with ``max_retries``, and stay until ``events`` events
    arrived on a connection that is open."""
    async with served(app, "uvicorn-websockets") as server:
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with connect(url, **{**FAST, "max_retries": max_retries}) as client:
            collector = Collector(client)
            await collector.wait_events(events, timeout=15)
            assert client.status == "open"


def test_a_429_with_retry_after_is_waited_out_and_not_counted() -> None:
    """Refused twice with 429 and Retry-After: 1 (max_retries=1): the client waits about a
    second each time, then reconnects and resumes."""
    app = HintingApp(["1012", "429", "429", "stay"])
    run(open_and_wait(app, max_retries=1, events=2), timeout=30)
    assert len(app.times) == 4
    assert 1.0 <= app.times[2] - app.times[1] <= 1.0 + 0.25 + 1.0
    assert 1.0 <= app.times[3] - app.times[2] <= 1.0 + 0.25 + 1.0
    assert "since=e1%3A1" in app.queries[3] or "since=e1:1" in app.queries[3]


def test_a_first_connection_refused_with_a_hint_waits_it_out() -> None:
    """A worker over its admission rate answers the very first handshake 429 with
    Retry-After: 1: ``async with connect(...)`` waits about a second and gets in, rather
    than failing (a 429 without a hint, or past max_retries hints, still fails at once)."""
    app = HintingApp(["429", "stay"])
    run(open_and_wait(app, max_retries=2, events=1), timeout=30)
    assert len(app.times) == 2
    assert 1.0 <= app.times[1] - app.times[0] <= 1.0 + 0.25 + 1.0


def test_a_first_connection_stops_after_max_retries_hints() -> None:
    app = HintingApp(["429", "429", "429", "stay"])

    async def scenario() -> None:
        async with served(app, "uvicorn-websockets") as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            with pytest.raises(HandshakeRejected) as refused:
                async with connect(url, **{**FAST, "max_retries": 1}):
                    pass
            assert refused.value.status == 429
        assert len(app.times) == 2  # the first try and one hinted retry

    run(scenario(), timeout=30)


async def drain(client: Any) -> None:
    async for _ in client:
        pass


@pytest.mark.parametrize("reason", ["retry_after=-5", "retry_after=NaN", "retry_after=1e309", "x"])
def test_hostile_hints_fall_back_to_the_counted_backoff(reason: str) -> None:
    """A server that closes 1013 with a nonsense hint at once, for ever: the client backs off,
    counts the attempts and gives up after max_retries, quickly and without spinning."""

    async def closes(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome("e1:0"))
        await peer._write(peer.ws.send(CloseConnection(code=1013, reason=reason)))

    async def scenario() -> None:
        async with ScriptedServer(*[closes] * 10) as server:
            started = time.monotonic()
            async with connect(server.url, **{**FAST, "max_retries": 3}) as client:
                with pytest.raises(ConnectionFailed, match="gave up after 3"):
                    await drain(client)
            assert time.monotonic() - started < 5
            assert len(server.peers) == 4

    run(scenario())


def test_state_on_connect_through_the_quickstart_middleware_app() -> None:
    """FastAPI with the middleware at /ws, metrics on: state=True goes catching_up, then open
    once the state frame is in; a 1012 from the server would be followed the same way."""
    from fastapi import FastAPI
    from prometheus_client import CollectorRegistry

    from livepanel import LivePanelMiddleware
    from livepanel.metrics import instrument

    broadcaster = Broadcaster()
    endpoint = LivePanelApp(broadcaster, auth=None, heartbeat_interval=5.0)
    instrument(broadcaster, app=endpoint, registry=CollectorRegistry())
    app = FastAPI()
    app.add_middleware(LivePanelMiddleware, path="/ws", endpoint=endpoint)

    async def scenario() -> None:
        async with served(app, "uvicorn-websockets") as server:
            await broadcaster.apublish(
                SessionCreated(session_key="s0", agent_id="a1", kind="direct")
            )
            seen: list[str] = []
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with connect(url, state=True, on_status=seen.append, **FAST) as client:
                collector = Collector(client)
                await collector.wait_events(1)
                assert collector.events[0].type == "state"
                assert client.status == "open"
                assert seen == ["catching_up", "open"]
                assert client.state is not None
                await broadcaster.apublish(
                    SessionCreated(session_key="s1", agent_id="a1", kind="direct")
                )
                await collector.wait_events(2)
                assert client.status == "open"

    run(scenario())
