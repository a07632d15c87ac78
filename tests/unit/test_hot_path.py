"""The broadcast hot path: direct writes to idle connections, hand-over to the writer when a
socket is full, batching. Driven through LivePanelApp with an in-memory ASGI server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

import pytest

from livepanel import Broadcaster, LivePanelApp
from livepanel.broadcaster import BATCH_LINGER_MAX, Subscriber, resume
from livepanel.events import SessionKilled

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a test coroutine in a fresh event loop, failing instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def killed(n: int) -> SessionKilled:
    return SessionKilled(session_key=f"s{n}", agent_id="a1")


class FakeSocket:
    """An ASGI connection in memory: records what the app sends, stalls like a full socket."""

    def __init__(self, query: bytes = b"") -> None:
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "path": "/",
            "query_string": query,
            "headers": [],
            "scheme": "ws",
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "extensions": {},
        }
        self.frames: list[str] = []
        self.closed: int | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.error: BaseException | None = None
        self.cancelled: list[str] = []  # the types of messages whose send was cancelled
        self._connected = False
        self._gone = asyncio.Event()
        self._frame = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        await self._gone.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await self.writable.wait()  # as uvicorn: a paused transport makes send wait
        except asyncio.CancelledError:
            self.cancelled.append(message["type"])
            raise
        if self.error is not None and message["type"] == "websocket.send":
            raise self.error
        if message["type"] == "websocket.send":
            self.frames.append(message["text"])
            self._frame.set()
        elif message["type"] == "websocket.close":
            self.closed = message["code"]
            self._frame.set()

    def disconnect(self) -> None:
        self._gone.set()

    def types(self) -> list[str]:
        return [json.loads(line)["type"] for frame in self.frames for line in frame.split("\n")]

    def keys(self) -> list[str]:
        return [
            json.loads(line)["payload"]["sessionKey"]
            for frame in self.frames
            for line in frame.split("\n")
            if '"session.killed"' in line
        ]

    async def wait_frames(self, n: int) -> None:
        while len(self.frames) < n:
            self._frame.clear()
            await self._frame.wait()


async def connect(app: LivePanelApp, socket: FakeSocket) -> tuple[asyncio.Task[None], Subscriber]:
    """Start the app on ``socket``; return its task and its subscriber once welcomed."""
    before = set(app.broadcaster._subscribers)
    task = asyncio.ensure_future(app(socket.scope, socket.receive, socket.send))  # type: ignore[arg-type]
    await socket.wait_frames(1)
    (sub,) = set(app.broadcaster._subscribers) - before
    for _ in range(3):  # let the writer park
        await asyncio.sleep(0)
    return task, sub


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def make_app(**kwargs: Any) -> LivePanelApp:
    logging.getLogger("livepanel").setLevel(logging.ERROR)  # auth=None warns
    return LivePanelApp(Broadcaster(**kwargs), auth=None, client_rate=None)


def test_an_idle_connection_is_written_without_waking_its_writer() -> None:
    """A broadcast reaches an idle connection through the per-turn pass; its writer stays parked."""

    async def scenario() -> tuple[list[str], bool, int]:
        app = make_app()
        socket = FakeSocket()
        task, sub = await connect(app, socket)
        assert sub.sink is not None  # the writer is parked, the fast path is on
        for n in range(3):
            app.broadcaster.publish(killed(n))
            await turns(1)
        await socket.wait_frames(4)
        still_parked = sub.sink is not None
        delivered = app.broadcaster.stats()["delivered"]
        socket.disconnect()
        await task
        return socket.keys(), still_parked, delivered

    keys, still_parked, delivered = run(scenario())
    assert keys == ["s0", "s1", "s2"]
    assert still_parked
    assert delivered == 3


def test_events_published_in_one_turn_share_a_batch_frame() -> None:
    """With ?batch=1, events queued before the batching round go out as one frame."""

    async def scenario() -> list[str]:
        app = make_app()
        socket = FakeSocket(b"batch=1")
        task, _ = await connect(app, socket)
        for n in range(3):
            app.broadcaster.publish(killed(n))
        await socket.wait_frames(2)
        socket.disconnect()
        await task
        return socket.frames[1:]

    frames = run(scenario())
    assert len(frames) == 1
    assert [json.loads(line)["payload"]["sessionKey"] for line in frames[0].split("\n")] == [
        "s0",
        "s1",
        "s2",
    ]


def test_without_batch_each_event_has_its_own_frame() -> None:
    """Without ?batch=1, events published in one turn still go out one frame each."""

    async def scenario() -> list[str]:
        app = make_app()
        socket = FakeSocket()
        task, _ = await connect(app, socket)
        for n in range(3):
            app.broadcaster.publish(killed(n))
        await socket.wait_frames(4)
        socket.disconnect()
        await task
        return socket.frames[1:]

    frames = run(scenario())
    assert len(frames) == 3
    assert all("\n" not in frame for frame in frames)


def test_a_batching_round_lingers_at_most_batch_linger_max() -> None:
    """The batching delay follows the last round's duration and never exceeds its cap."""

    async def scenario() -> float:
        app = make_app()
        socket = FakeSocket(b"batch=1")
        task, _ = await connect(app, socket)
        flusher = app.broadcaster._flusher
        assert flusher is not None
        flusher._linger = 60.0  # as if a round had taken a minute
        flusher._run_batch()  # an empty round measures itself
        linger = flusher._linger
        socket.disconnect()
        await task
        return linger

    assert 0 <= run(scenario()) <= BATCH_LINGER_MAX


def test_a_write_that_waits_is_finished_by_the_writer_in_order() -> None:
    """A direct write that finds the socket full is handed to the writer; later events follow it."""

    async def scenario() -> tuple[list[str], bool, int]:
        app = make_app()
        socket = FakeSocket()
        task, sub = await connect(app, socket)
        socket.writable.clear()  # the socket is full
        app.broadcaster.publish(killed(0))
        await turns()
        handed_over = sub.sink is None  # the writer woke to finish the parked write
        app.broadcaster.publish(killed(1))
        app.broadcaster.publish(killed(2))
        await turns()
        socket.writable.set()
        await socket.wait_frames(4)
        await turns()
        delivered = app.broadcaster.stats()["delivered"]
        socket.disconnect()
        await task
        return socket.keys(), handed_over, delivered

    keys, handed_over, delivered = run(scenario())
    assert keys == ["s0", "s1", "s2"]
    assert handed_over
    assert delivered == 3


def test_after_a_stall_the_connection_returns_to_direct_writes() -> None:
    """Once a write of the writer's own completes without waiting, direct writes resume."""

    async def scenario() -> bool:
        app = make_app()
        socket = FakeSocket()
        task, sub = await connect(app, socket)
        socket.writable.clear()
        app.broadcaster.publish(killed(0))
        await turns()
        socket.writable.set()
        await socket.wait_frames(2)
        app.broadcaster.publish(killed(1))  # written by the writer, without waiting
        await socket.wait_frames(3)
        await turns()
        parked_again = sub.sink is not None
        socket.disconnect()
        await task
        return parked_again

    assert run(scenario())


def test_a_stalled_connection_does_not_delay_the_others() -> None:
    """One full socket holds back nobody: the other connection gets the event at once."""

    async def scenario() -> tuple[list[str], list[str]]:
        app = make_app()
        stalled, fast = FakeSocket(), FakeSocket()
        stalled_task, _ = await connect(app, stalled)
        fast_task, _ = await connect(app, fast)
        stalled.writable.clear()
        app.broadcaster.publish(killed(0))
        await fast.wait_frames(2)
        got = (stalled.keys(), fast.keys())
        stalled.writable.set()
        stalled.disconnect()
        fast.disconnect()
        await asyncio.gather(stalled_task, fast_task)
        return got

    stalled_keys, fast_keys = run(scenario())
    assert stalled_keys == []
    assert fast_keys == ["s0"]


def test_a_stalled_connection_is_still_closed_with_1013_when_its_queue_fills() -> None:
    """Behind a parked write the queue stays bounded: overflowing it closes with 1013."""

    async def scenario() -> tuple[int | None, int]:
        app = make_app(queue_size=2)
        socket = FakeSocket()
        task, _ = await connect(app, socket)
        socket.writable.clear()
        for n in range(5):  # one parked write, two queued, then the overflow
            app.broadcaster.publish(killed(n))
            await turns()
        slow = app.broadcaster.stats()["slow_disconnects"]
        socket.writable.set()
        await task
        return socket.closed, slow

    closed, slow = run(scenario())
    assert closed == 1013
    assert slow == 1


def test_a_vanished_client_ends_the_connection_quietly() -> None:
    """An OSError from a direct write (the client is gone) ends the connection without an error."""

    async def scenario() -> int:
        app = make_app()
        socket = FakeSocket()
        task, _ = await connect(app, socket)
        socket.error = ConnectionResetError("gone")
        app.broadcaster.publish(killed(0))
        socket.disconnect()
        await task  # returns: no exception
        return app.broadcaster.connection_count

    assert run(scenario()) == 0


def test_a_server_error_in_a_direct_write_is_raised_by_the_app() -> None:
    """An error other than OSError from ``send`` comes out of the app, as from any await."""

    async def scenario() -> None:
        app = make_app()
        socket = FakeSocket()
        task, _ = await connect(app, socket)
        socket.error = RuntimeError("the server refused the message")
        app.broadcaster.publish(killed(0))
        await task

    with pytest.raises(RuntimeError, match="refused"):
        run(scenario())


def test_cancelling_the_connection_cancels_its_parked_write() -> None:
    """A write handed to the writer is cancelled with it, like any awaited send."""

    async def scenario() -> list[str]:
        app = make_app()
        socket = FakeSocket()
        task, _ = await connect(app, socket)
        socket.writable.clear()
        app.broadcaster.publish(killed(0))
        await turns()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return socket.cancelled

    assert "websocket.send" in run(scenario())


class _NativeAwaitable:
    """A send written outside Python (granian's): ``__await__`` gives a plain iterator."""

    def __init__(self, gate: asyncio.Future[None] | None, sent: FakeSocket, text: str) -> None:
        self.gate = gate
        self.sent = sent
        self.text = text

    def __await__(self) -> Generator[Any, None, None]:
        return self._iterate()

    def _iterate(self) -> Generator[Any, None, None]:
        if self.gate is not None and not self.gate.done():
            yield from self.gate
        self.sent.frames.append(self.text)
        self.sent._frame.set()


def test_a_server_whose_send_always_waits_gets_the_writer() -> None:
    """When the writer's own writes wait too (granian), events wake the writer directly."""

    async def scenario() -> tuple[list[str], bool]:
        app = make_app()
        socket = FakeSocket()
        plain_send = socket.send

        async def send(message: dict[str, Any]) -> None:
            await asyncio.sleep(0)  # like granian: every send completes on a later turn
            await plain_send(message)

        socket.send = send  # type: ignore[method-assign]
        task, sub = await connect(app, socket)
        for n in range(3):
            app.broadcaster.publish(killed(n))
            await socket.wait_frames(n + 2)
        await turns()
        direct = sub.sink is not None
        socket.disconnect()
        await task
        return socket.keys(), direct

    keys, direct = run(scenario())
    assert keys == ["s0", "s1", "s2"]
    assert not direct


def test_a_send_that_returns_a_non_coroutine_awaitable_works() -> None:
    """Direct writes and hand-overs work with awaitables that are not coroutines."""

    async def scenario() -> tuple[list[str], bool]:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stalled = False
        socket = FakeSocket()
        plain_send = socket.send

        def send(message: dict[str, Any]) -> Any:
            if message["type"] != "websocket.send":
                return plain_send(message)
            return _NativeAwaitable(gate if stalled else None, socket, message["text"])

        app = make_app()
        socket.send = send  # type: ignore[method-assign]
        task, sub = await connect(app, socket)
        app.broadcaster.publish(killed(0))  # completes at once
        await socket.wait_frames(2)
        stalled = True
        app.broadcaster.publish(killed(1))  # waits on the gate: handed to the writer
        await turns()
        handed_over = sub.sink is None
        gate.set_result(None)
        await socket.wait_frames(3)
        socket.disconnect()
        await task
        return socket.keys(), handed_over

    keys, handed_over = run(scenario())
    assert keys == ["s0", "s1"]
    assert handed_over


def test_resume_finishes_a_started_coroutine_inside_a_task() -> None:
    """``resume`` hands the task what a started coroutine waits on and returns when it ends."""

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[None] = loop.create_future()
        log: list[str] = []

        async def write() -> None:
            log.append("start")
            await gate
            log.append("end")

        step = write().__await__()
        waiting = next(step)  # started outside any task, now waiting on the gate
        loop.call_soon(gate.set_result, None)
        await resume(step, waiting)
        return log

    assert run(scenario()) == ["start", "end"]
