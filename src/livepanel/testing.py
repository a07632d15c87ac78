"""Test code that publishes: capture what it published, read a test WebSocket with a timeout.

:func:`capture_events` records every event a broadcaster delivers while a
``with`` (or ``async with``) block runs, through the public
:meth:`Broadcaster.subscribe() <livepanel.broadcaster.Broadcaster.subscribe>`;
:func:`receive_frame` and :func:`receive_event` read a Starlette ``TestClient``
WebSocket without ever blocking forever.

With pytest, ``pytest_plugins = ["livepanel.testing"]`` in your top-level
``conftest.py`` adds the ``livepanel_events`` fixture: a :class:`CapturedEvents`
of the default broadcaster for the length of the test. pytest is imported
only when it is installed; nothing here needs it.

Example::

    with capture_events() as events:
        client.post("/api/sessions/spawn")
    assert events.of_type("session.created")[0].payload["agentId"] == "a1"
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, overload

from livepanel.broadcaster import Broadcaster, SlowConsumer, get_broadcaster
from livepanel.events import Event
from livepanel.type_filter import TypeFilter, type_globs

__all__ = ["CapturedEvents", "EventCapture", "capture_events", "receive_event", "receive_frame"]


class CapturedEvents(Sequence[Event]):
    """The events a :func:`capture_events` block saw, in stream order, each with its ``id``.

    A read-only sequence, filled from the capture's own thread or task; the
    ``wait_for`` methods block until enough have arrived, with a timeout.

    Example::

        with capture_events() as events:
            broadcast_event(SessionKilled(session_key="s1", agent_id="a1"))
            events.wait_for(1, type="session.*")
        assert [e.type for e in events] == ["session.killed"]
    """

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._seen: set[str] = set()
        self._changed = threading.Condition()
        self._failure: BaseException | None = None

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        with self._changed:
            return self._events[index]

    def __len__(self) -> int:
        return len(self._events)

    def __repr__(self) -> str:
        return f"CapturedEvents({[event.type for event in self._events]!r})"

    def of_type(self, *types: str) -> list[Event]:
        """The captured events whose type matches one of the globs (``"session.*"``)."""
        wanted = TypeFilter(type_globs(list(types) or ["*"]))
        with self._changed:
            return [event for event in self._events if wanted.matches(event.type)]

    def wait_for(self, count: int = 1, *, type: str = "*", timeout: float = 2.0) -> list[Event]:
        """Block until ``count`` events of ``type`` (a glob) were captured; return them all.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds; the message
                lists what did arrive.
        """
        wanted = TypeFilter(type_globs(type))
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self._failure is not None:
                    raise self._failure
                matching = [event for event in self._events if wanted.matches(event.type)]
                left = deadline - time.monotonic()
                if len(matching) >= count or left <= 0:
                    break
                self._changed.wait(left)
        if len(matching) < count:
            raise TimeoutError(
                f"wait_for: {len(matching)} of {count} {type!r} events within {timeout:g} s; "
                f"captured so far: {[event.type for event in self._events]}. Was the event "
                "published on the broadcaster this capture watches?"
            )
        return matching

    async def wait_for_async(
        self, count: int = 1, *, type: str = "*", timeout: float = 2.0
    ) -> list[Event]:
        """:meth:`wait_for` for async tests: waits in a thread, never blocks the event loop."""
        return await asyncio.to_thread(self.wait_for, count, type=type, timeout=timeout)

    def _add(self, event: Event) -> None:
        with self._changed:
            self._events.append(event)
            if event.id is not None:
                self._seen.add(event.id)
            self._changed.notify_all()

    def _fail(self, failure: BaseException) -> None:
        with self._changed:
            self._failure = failure
            self._changed.notify_all()

    def _settle(self, last_id: str, timeout: float) -> None:
        """Wait until the event ``last_id`` (the newest delivered when the block ended) is in."""
        with self._changed:
            self._changed.wait_for(
                lambda: last_id in self._seen or self._failure is not None, timeout
            )


class EventCapture:
    """What :func:`capture_events` returns: use it with ``with`` or ``async with``.

    ``with`` runs the subscription in a thread of its own, so that sync tests,
    threads and other event loops may publish meanwhile; ``async with`` runs
    it as a task in the running loop. On the way out it waits (at most
    ``settle`` seconds) for every event this process delivered before the
    block ended, so assertions after the block see them all.

    Example::

        async with capture_events(broadcaster) as events:
            await broadcaster.apublish("session.killed", {"sessionKey": "s1", "agentId": "a1"})
        assert events[0].id is not None
    """

    def __init__(self, broadcaster: Broadcaster | None = None, *, settle: float = 2.0) -> None:
        self.broadcaster = broadcaster if broadcaster is not None else get_broadcaster()
        self.settle = settle
        self.events = CapturedEvents()
        self._start_id = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    async def _collect(self, opened: Callable[[BaseException | None], None]) -> None:
        """Subscribe to everything and record it; after a fall-behind, resume from the last id."""
        since: str | None = None
        try:
            while True:
                try:
                    async with self.broadcaster.subscribe(["*"], since=since) as subscription:
                        if since is None:
                            self._start_id = subscription.last_event_id
                            opened(None)
                        elif subscription.resumed is False:
                            raise LookupError(
                                f"capture_events: fell behind and the events after {since!r} "
                                "are no longer retained; raise the broadcaster's history"
                            )
                        async for event in subscription:
                            self.events._add(event)
                            since = event.id or since
                    return  # the broadcaster was closed
                except SlowConsumer:
                    since = since or self._start_id  # resume where the last event left off
        except Exception as exc:  # the backend cannot serve, or history ran out
            opened(exc)
            self.events._fail(exc)

    # ------------------------------------------------------------------ sync

    def __enter__(self) -> CapturedEvents:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def opened(failure: BaseException | None) -> None:
            if started.done():
                return
            if failure is None:
                started.set_result(None)
            else:
                started.set_exception(failure)

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                self._task = loop.create_task(self._collect(opened))
                loop.run_until_complete(asyncio.wait([self._task]))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="livepanel-capture", daemon=True)
        self._thread.start()
        started.result(timeout=30)
        return self.events

    def __exit__(self, *exc_info: object) -> None:
        self.events._settle(self.broadcaster.last_event_id, self._settle_for())
        loop, task, thread = self._loop, self._task, self._thread
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the loop already ended: the broadcaster was closed
        if thread is not None:
            thread.join(10)
        if exc_info[0] is None:  # never hide the block's own exception
            self._raise_failure()

    # ------------------------------------------------------------------ async

    async def __aenter__(self) -> CapturedEvents:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def opened(failure: BaseException | None) -> None:
            if started.done():
                return
            if failure is None:
                started.set_result(None)
            else:
                started.set_exception(failure)

        self._task = asyncio.create_task(self._collect(opened))
        await started
        return self.events

    async def __aexit__(self, *exc_info: object) -> None:
        last_id = self.broadcaster.last_event_id
        await asyncio.to_thread(self.events._settle, last_id, self._settle_for())
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if exc_info[0] is None:  # never hide the block's own exception
            self._raise_failure()

    def _settle_for(self) -> float:
        return 0.0 if self.broadcaster.last_event_id == self._start_id else self.settle

    def _raise_failure(self) -> None:
        if self.events._failure is not None:
            raise self.events._failure


def capture_events(broadcaster: Broadcaster | None = None, *, settle: float = 2.0) -> EventCapture:
    """Capture every event ``broadcaster`` (the default one when ``None``) delivers in a block.

    Works whoever publishes: ``broadcast_event`` from sync code or another
    thread, ``apublish`` from async code, a request handled by a ``TestClient``.
    Events come typed, with their ids, in stream order.

    Args:
        broadcaster: the broadcaster to watch; ``None`` for :func:`~livepanel.get_broadcaster`.
        settle: at most how long leaving the block waits for the events this
            process delivered before it ended.

    Example::

        with capture_events() as events:
            response = client.post("/api/sessions/spawn", json={"agent": "a1"})
        (created,) = events.of_type("session.created")
        assert created.payload["agentId"] == "a1" and created.id
    """
    return EventCapture(broadcaster, settle=settle)


# --------------------------------------------------------------------------- TestClient sockets


class _TextSocket(Protocol):
    """What the readers need of a socket: Starlette's ``WebSocketTestSession`` has it."""

    def receive_text(self) -> str: ...


class _Reader:
    """One socket's read in flight (a read that timed out carries over) and unread frames."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: concurrent.futures.Future[str] | None = None
        self.frames: deque[dict[str, Any]] = deque()


# Keyed by the socket, gone with it: a timed-out read must not lose the frame it later gets.
_readers: weakref.WeakKeyDictionary[Any, _Reader] = weakref.WeakKeyDictionary()
_readers_lock = threading.Lock()


def _reader(ws: _TextSocket) -> _Reader:
    with _readers_lock:
        reader = _readers.get(ws)
        if reader is None:
            reader = _readers[ws] = _Reader()
        return reader


def _read_text(ws: _TextSocket) -> concurrent.futures.Future[str]:
    """``ws.receive_text()`` in a daemon thread (it blocks without a timeout)."""
    future: concurrent.futures.Future[str] = concurrent.futures.Future()

    def read() -> None:
        try:
            text = ws.receive_text()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(text)

    threading.Thread(target=read, name="livepanel-receive", daemon=True).start()
    return future


def receive_frame(ws: _TextSocket, timeout: float = 2.0) -> dict[str, Any]:
    """The next server frame of a ``TestClient`` WebSocket, decoded, within ``timeout`` seconds.

    Unlike ``ws.receive_json()`` it never blocks forever. A read that timed
    out stays pending and its frame goes to the next call, so nothing is
    lost; read a socket with these helpers only once you use them on it.
    Batched frames (``?batch=1``) come out one by one.

    Raises:
        TimeoutError: no frame within ``timeout``.
        starlette.websockets.WebSocketDisconnect: the server closed the socket
            (as ``receive_json()`` raises it).

    Example::

        with client.websocket_connect("/ws") as ws:
            assert receive_frame(ws)["type"] == "welcome"
    """
    reader = _reader(ws)
    with reader.lock:
        if reader.frames:
            return reader.frames.popleft()
        if reader.pending is None:
            reader.pending = _read_text(ws)
        try:
            text = reader.pending.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"receive_frame: no frame from the server within {timeout:g} s"
            ) from None
        finally:
            if reader.pending.done():
                reader.pending = None
        first, *rest = (json.loads(line) for line in text.split("\n") if line)
        reader.frames.extend(rest)
        frame: dict[str, Any] = first
        return frame


def receive_event(ws: _TextSocket, type: str | Iterable[str] = "*", timeout: float = 2.0) -> Event:
    """The next broadcast event of type ``type`` (globs), skipping every other frame.

    Skips ``welcome``, ``ping``, ``pong``, ``state``, ``error`` and events of
    other types; ``timeout`` bounds the whole wait.

    Raises:
        TimeoutError: no such event within ``timeout``; the message lists
            the frames that were skipped.

    Example::

        with client.websocket_connect("/ws?types=session.*") as ws:
            client.post("/api/sessions/spawn")
            assert receive_event(ws, type="session.created").payload["agentId"] == "a1"
    """
    wanted = TypeFilter(type_globs(type))
    deadline = time.monotonic() + timeout
    skipped: list[str] = []
    while True:
        left = deadline - time.monotonic()
        try:
            frame = receive_frame(ws, timeout=max(left, 0.0))
        except TimeoutError:
            raise TimeoutError(
                f"receive_event: no {type!r} event within {timeout:g} s; skipped: "
                f"{skipped or 'nothing'}"
            ) from None
        if "id" in frame and isinstance(frame.get("type"), str) and wanted.matches(frame["type"]):
            return Event.from_dict(frame)
        kind = frame.get("type")
        code = frame.get("payload", {}).get("code") if kind == "error" else None
        skipped.append(f"{kind} {code}" if code else str(kind))


# --------------------------------------------------------------------------- pytest

try:
    import pytest
except ImportError:  # pytest is a test-time tool, never a dependency
    pass
else:

    @pytest.fixture
    def livepanel_events() -> Iterator[CapturedEvents]:
        """The events the default broadcaster delivers during the test (``capture_events()``).

        Example::

            def test_spawn(client, livepanel_events):
                client.post("/api/sessions/spawn")
                livepanel_events.wait_for(1, type="session.created")
        """
        with capture_events() as events:
            yield events
