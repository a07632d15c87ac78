"""A round writes to a parked writer as that writer's task (livepanel.writer): what a host's
middleware sees of it, on every server. Each ``send`` runs as one task of the connection's
own, in its context, whether it completes at once or has to wait; a ``send`` that waits is
finished by that task, in order; a middleware's timeout around a ``send`` that never
completes closes that connection alone with 1011."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from livepanel import Broadcaster, LivePanelApp
from livepanel.events import SessionKilled
from livepanel.writer import UNSTARTED, resume
from tests.integration.helpers import (
    TIMEOUT,
    admin_only,
    expect_welcome,
    open_ws,
    recv_json,
    wait_until,
)
from tests.servers import run_server

KINDS = ("uvicorn-websockets-sansio", "uvicorn-websockets", "uvicorn-wsproto", "hypercorn")
each_server = pytest.mark.parametrize("kind", KINDS)
needs_311 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="before 3.11 every round wakes the task (no context)"
)

request_name: contextvars.ContextVar[str] = contextvars.ContextVar("request_name", default="-")
EVENTS = 40


def killed(n: int) -> SessionKilled:
    return SessionKilled(session_key=f"s{n}", agent_id="a1")


class Watching:
    """A host middleware: names each request in a contextvar, then for every
    ``websocket.send`` records the task and the name it sees. With ``wait_every``, every
    that many sends first awaits a real pause (the ``send`` cannot complete at once); with
    ``stall`` in the query, the third send never completes, under ``asyncio.timeout``."""

    def __init__(self, app: Any, wait_every: int = 0) -> None:
        self.app = app
        self.wait_every = wait_every
        self.seen: dict[str, list[tuple[int, str]]] = {}  # request: (task id, name seen)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        name = scope.get("query_string", b"").decode() or scope["path"]
        request_name.set(name)
        sends = self.seen.setdefault(name, [])

        async def watched(message: Any) -> None:
            if message["type"] != "websocket.send":
                await send(message)
                return
            async with asyncio.timeout(1.0 if "stall" in name else TIMEOUT):
                sends.append((id(asyncio.current_task()), request_name.get()))
                if "stall" in name and len(sends) == 3:
                    await asyncio.Event().wait()  # never: the timeout cancels it
                if self.wait_every and len(sends) % self.wait_every == 0:
                    await asyncio.sleep(0.002)
                    request_name.set(name)  # a set after a wait lands in the same context
                await send(message)
                sends.append((id(asyncio.current_task()), request_name.get()))

        await self.app(scope, receive, watched)


def publish_and_read(
    server: Any, broadcaster: Broadcaster, names: list[str], *, paced: bool = False
) -> list[list[Any]]:
    """Open a dashboard per name, publish EVENTS one at a time, return what each received.
    ``paced``: each event is read by every dashboard before the next is published (one
    frame per round, as at a steady rate)."""
    received: list[list[Any]] = [[] for _ in names]
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(open_ws(server, name, path="/")) for name in names]
        for ws in sockets:
            expect_welcome(ws)
        published = []
        for n in range(EVENTS):
            published.append(broadcaster.publish(killed(n)).id)
            if paced:
                for ids, ws in zip(received, sockets, strict=True):
                    ids.append(recv_json(ws)["id"])
        if not paced:
            for ids, ws in zip(received, sockets, strict=True):
                ids.extend(recv_json(ws)["id"] for _ in range(EVENTS))
    assert all(ids == published for ids in received)
    return received


@needs_311
@each_server
def test_every_send_of_a_connection_runs_in_one_task_of_its_own_and_its_context(
    kind: str,
) -> None:
    """Two dashboards: each one's sends, before and after the server's send, all see one
    task (not the other's, not the publisher's) and the request's own contextvar."""
    broadcaster = Broadcaster()
    host = Watching(LivePanelApp(broadcaster, auth=admin_only()))
    with run_server(host, kind) as server:
        publish_and_read(server, broadcaster, ["user=a", "user=b"])
    tasks = {}
    for name in ("user=a", "user=b"):
        sends = host.seen[name]
        assert len(sends) >= 2 * (EVENTS + 1)
        assert {seen for _, seen in sends} == {name}
        tasks[name] = {task for task, _ in sends}
        assert len(tasks[name]) == 1, f"{name}'s sends ran in {len(tasks[name])} tasks"
    assert tasks["user=a"] != tasks["user=b"]


class PlainWrapper:
    """A host middleware whose ``send`` is a plain function that returns the server's
    coroutine: its own code runs when it is *called*, so a round must call it as the
    connection's task, in its context (only an ``async def`` may be called outside)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: dict[str, list[tuple[int, str]]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        name = scope.get("query_string", b"").decode() or scope["path"]
        request_name.set(name)
        calls = self.seen.setdefault(name, [])

        def plain(message: Any) -> Any:
            if message["type"] == "websocket.send":
                calls.append((id(asyncio.current_task()), request_name.get()))
            return send(message)

        await self.app(scope, receive, plain)


@needs_311
@each_server
def test_a_send_wrapper_that_is_a_plain_function_is_called_in_the_connections_task(
    kind: str,
) -> None:
    """Every call of a plain-function ``send`` wrapper, one frame per round or several,
    sees the connection's own task and contextvar: never the round's, never none."""
    broadcaster = Broadcaster()
    host = PlainWrapper(LivePanelApp(broadcaster, auth=admin_only()))
    with run_server(host, kind) as server:
        publish_and_read(server, broadcaster, ["user=a", "user=b"], paced=True)
        publish_and_read(server, broadcaster, ["user=c", "user=d"])
    tasks = {}
    for name in ("user=a", "user=b", "user=c", "user=d"):
        calls = host.seen[name]
        assert len(calls) >= EVENTS + 1
        assert {seen for _, seen in calls} == {name}
        tasks[name] = {task for task, _ in calls}
        assert len(tasks[name]) == 1
    # a and b were open together, then c and d (a task's id may be reused after it ended)
    assert tasks["user=a"] != tasks["user=b"]
    assert tasks["user=c"] != tasks["user=d"]


@each_server
def test_a_send_that_has_to_wait_is_finished_by_the_connections_task_in_order(
    kind: str,
) -> None:
    """Every third send awaits a real pause before the server's send: nothing is lost,
    repeated or reordered, and the send resumes in the same task and context."""
    broadcaster = Broadcaster()
    host = Watching(LivePanelApp(broadcaster, auth=admin_only()), wait_every=3)
    with run_server(host, kind) as server:
        publish_and_read(server, broadcaster, ["user=a", "user=b"])
    for name in ("user=a", "user=b"):
        sends = host.seen[name]
        assert {seen for _, seen in sends} == {name}
        assert len({task for task, _ in sends}) == 1


@each_server
def test_sends_that_wait_for_several_connections_of_one_round_keep_each_ones_order(
    kind: str,
) -> None:
    """Five dashboards, every second send of each awaits a pause: in one round several
    writers' sends stop half-way, each keeps the steps it stopped in and the round goes on
    for the others; every dashboard gets every event once, in order, in its own task."""
    broadcaster = Broadcaster()
    host = Watching(LivePanelApp(broadcaster, auth=admin_only()), wait_every=2)
    names = [f"user={who}" for who in "abcde"]
    with run_server(host, kind) as server:
        publish_and_read(server, broadcaster, names)
    tasks = set()
    for name in names:
        sends = host.seen[name]
        assert {seen for _, seen in sends} == {name}
        assert len({task for task, _ in sends}) == 1
        tasks |= {task for task, _ in sends}
    assert len(tasks) == len(names)


@each_server
def test_a_middleware_timeout_on_a_send_that_never_completes_ends_that_connection_alone(
    kind: str,
) -> None:
    """The stalled dashboard's first event's send never completes: its middleware's timeout
    cancels it (as it would in the connection's task); the ``TimeoutError`` (an ``OSError``)
    means a client that is not there, so that connection ends without a close frame and
    leaves the fan-out, and the other dashboard gets every event."""
    broadcaster = Broadcaster()
    host = Watching(LivePanelApp(broadcaster, auth=admin_only()))
    with run_server(host, kind) as server:
        with open_ws(server, "stall", path="/") as stalled, open_ws(server, "ok", path="/") as ok:
            expect_welcome(stalled)
            expect_welcome(ok)
            published = [broadcaster.publish(killed(n)).id for n in range(5)]
            assert [recv_json(ok)["id"] for _ in range(5)] == published
            with pytest.raises(ConnectionClosed):
                [recv_json(stalled) for _ in range(6)]  # read until it ends
            wait_until(lambda: broadcaster.connection_count == 1, what="the stalled one gone")
            later = broadcaster.publish(killed(99)).id
            assert recv_json(ok)["id"] == later
    assert len(host.seen["stall"]) == 3  # the welcome's two records, then the stalled send


class _NextOnly:
    """An iterator with ``__next__`` only (no ``send``, no ``throw``), as some servers' own
    awaitables give (granian's, written in Rust)."""

    def __init__(self, steps: Any) -> None:
        self.steps = steps

    def __iter__(self) -> _NextOnly:
        return self

    def __next__(self) -> Any:
        return self.steps.send(None)


class _ServerAwaitable:
    def __init__(self, sending: Any) -> None:
        self.sending = sending

    def __await__(self) -> Any:
        return _NextOnly(self.sending.__await__())


class NotCoroutines:
    """A host whose ``send`` returns an awaitable that is not a coroutine."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        def plain(message: Any) -> _ServerAwaitable:
            return _ServerAwaitable(send(message))

        await self.app(scope, receive, plain)


@each_server
def test_a_send_that_returns_an_awaitable_other_than_a_coroutine_is_awaited_by_the_task(
    kind: str,
) -> None:
    """Nothing is stepped by hand that is not a coroutine: every event arrives, in order."""
    broadcaster = Broadcaster()
    host = NotCoroutines(LivePanelApp(broadcaster, auth=admin_only()))
    with run_server(host, kind) as server:
        publish_and_read(server, broadcaster, ["user=a", "user=b"])


# ---------------------------------------------------------------------- resume(), alone


async def _two_steps(log: list[str]) -> str:
    log.append("began")
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        log.append("cancelled inside")
        raise
    log.append("resumed")
    return "done"


def test_resume_finishes_a_coroutine_begun_elsewhere_with_its_value() -> None:
    async def main() -> tuple[str, list[str]]:
        log: list[str] = []
        steps = _two_steps(log)
        yielded = steps.send(None)  # begun outside any task, as a round begins a send
        return await resume(steps, yielded), log

    value, log = asyncio.run(main())
    assert (value, log) == ("done", ["began", "resumed"])


def test_resume_throws_a_cancellation_into_the_coroutine_it_carries() -> None:
    """Cancelled before it took the send over (thrown) or while it waits: either way the
    send sees the cancellation, as it would have in the task from the start."""

    async def main(early: bool) -> list[str]:
        log: list[str] = []
        steps = _two_steps(log)
        yielded = steps.send(None)
        if early:
            with pytest.raises(asyncio.CancelledError):
                await resume(steps, yielded, thrown=asyncio.CancelledError())
            return log
        task = asyncio.ensure_future(resume(steps, yielded))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return log

    assert asyncio.run(main(early=True)) == ["began", "cancelled inside"]
    assert asyncio.run(main(early=False)) == ["began", "cancelled inside"]


def test_resume_awaits_an_unstarted_awaitable_whole() -> None:
    async def value() -> str:
        await asyncio.sleep(0)
        return "sent"

    async def main() -> str:
        return await resume(_ServerAwaitable(value()), UNSTARTED)

    assert asyncio.run(main()) == "sent"
