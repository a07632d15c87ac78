"""Where the backend runs: the event loop that started it, and the way there from any other.

A broadcaster serves connections on any number of event loops, but its
backend (a Redis client, a reader task) belongs to one: the loop that started
it first. :class:`BackendHome` owns that loop and the start, with named
states (:class:`HomeState`): a loop that closes takes the backend's home with
it, and the next loop to use the broadcaster starts it again there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from livepanel.backends.base import Backend, Control, Deliver
from livepanel.errors import BackendUnavailable

__all__ = ["BackendHome", "HomeState"]

logger = logging.getLogger("livepanel")

T = TypeVar("T")


class HomeState(enum.Enum):
    """Whether the backend runs, and where.

    Example::

        >>> HomeState.RUNNING.value
        'running'
    """

    STOPPED = "stopped"
    """Never started, stopped, failed to start, or its loop went away: the next use starts it."""
    STARTING = "starting"
    """A loop is starting it; others wait for that start."""
    RUNNING = "running"
    """Started, on a loop that is still running."""


class BackendHome:
    """Starts ``backend`` on the first running loop that needs it and runs calls there.

    Args:
        backend: the backend it starts and stops.
        deliver: the backend's callback for new events (see :class:`~livepanel.backends.Backend`).
        on_control: the backend's callback for control messages.
        on_started: told the stream's newest id by the start that made it run, before
            anyone waiting for that start goes on.

    Example::

        home = BackendHome(backend, deliver, on_control, on_started)
        await home.start()
        events = await home.call(lambda: backend.replay(since))
    """

    __slots__ = (
        "_deliver",
        "_lock",
        "_loop",
        "_on_control",
        "_on_started",
        "_ready",
        "_tasks",
        "_warned_waiting",
        "backend",
    )

    def __init__(
        self,
        backend: Backend,
        deliver: Deliver,
        on_control: Control,
        on_started: Callable[[str], None],
    ) -> None:
        self.backend = backend
        self._deliver = deliver
        self._on_control = on_control
        self._on_started = on_started
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # where the backend runs
        self._ready: concurrent.futures.Future[str] | None = None  # its start: the head id
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_waiting = False  # warn_waiting() says it once

    @property
    def state(self) -> HomeState:
        """Where the start stands now (a closed or stopped loop counts as ``STOPPED``)."""
        ready, loop = self._ready, self._loop
        if ready is None or loop is None or not _alive(loop):
            return HomeState.STOPPED
        if not ready.done():
            return HomeState.STARTING
        return HomeState.RUNNING if ready.exception() is None else HomeState.STOPPED

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the backend runs on (``None`` before the first start)."""
        return self._loop

    def claimed(self) -> bool:
        """Whether a live loop has the backend, started or starting."""
        ready, loop = self._ready, self._loop
        return ready is not None and loop is not None and _alive(loop)

    async def start(self) -> None:
        """Start the backend on this loop unless a live one has it already.

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """
        ready, loop = self._ready, self._loop
        if ready is not None and ready.done() and loop is not None and _alive(loop):
            ready.result()
            return
        with self._lock:
            ready, loop = self._ready, self._loop
            starter = ready is None or loop is None or not _alive(loop)
            if starter:
                self._loop = asyncio.get_running_loop()
                ready = self._ready = concurrent.futures.Future()
        assert ready is not None
        if not starter:
            if not ready.done():
                await asyncio.wrap_future(ready)
            ready.result()
            return
        try:
            head = await self.backend.start(self._deliver, self._on_control)
        except BaseException as exc:
            with self._lock:
                if self._ready is ready:
                    self._ready = None
                    self._loop = None
            ready.set_exception(exc)
            raise
        self._on_started(head)
        ready.set_result(head)

    def start_soon(self, start: Callable[[], Awaitable[object]]) -> bool:
        """Run ``start()`` in a task of the running loop, unless started or starting there.

        A no-op outside a running loop. A :class:`BackendUnavailable` is logged;
        the next use tries again. Returns whether the backend is started, or a
        start is under way on a live loop: ``False`` only when nothing will start
        it until a loop calls this (or ``start()``) again.
        """
        if self.claimed():
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a plain thread: events wait for the first start in a loop
            return any(not task.done() and _alive(task.get_loop()) for task in self._tasks)
        if any(not task.done() and task.get_loop() is loop for task in self._tasks):
            return True
        task = loop.create_task(_logged(start))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def warn_waiting(self) -> None:
        """Say once that published events wait here, when the backend keeps them back."""
        if self._warned_waiting or not self.backend.stats().get("publish_pending"):
            return  # said already, or this backend keeps nothing back (memory)
        self._warned_waiting = True
        logger.warning(
            "livepanel: events published in this process wait until its broadcaster starts, "
            "and no event loop is starting it; call await broadcaster.start() at startup "
            "(or serve the endpoint with LivePanelMiddleware, which starts it) so that other "
            "workers receive them"
        )

    def detach(self) -> asyncio.AbstractEventLoop | None:
        """``STOPPED`` from now on; return the loop the backend ran on, to stop it there."""
        with self._lock:
            loop, self._loop, self._ready = self._loop, None, None
        return loop if loop is not None and _alive(loop) else None

    async def call(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` on the backend's loop (here, or through a thread-safe hand-off).

        Raises:
            BackendUnavailable: never started, or its loop is closed.
        """
        loop = self._loop
        if loop is None:
            raise BackendUnavailable("livepanel: the broadcaster is not started")
        return await call_on(loop, call)


async def call_on(loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[T]]) -> T:
    """Await ``call()`` on ``loop``: directly when it is the running one.

    Raises:
        BackendUnavailable: ``loop`` is closed.
    """
    if loop is asyncio.get_running_loop():
        return await call()

    async def there() -> T:
        return await call()

    try:
        future = asyncio.run_coroutine_threadsafe(there(), loop)
    except RuntimeError:
        raise BackendUnavailable("livepanel: the backend's event loop is closed") from None
    return await asyncio.wrap_future(future)


async def _logged(start: Callable[[], Awaitable[object]]) -> None:
    try:
        await start()
    except BackendUnavailable as exc:
        logger.warning("livepanel: the backend is unavailable, will retry on next use: %s", exc)


def _alive(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the backend can run on ``loop``: it is running (here or in another thread).

    A loop that is closed, or stopped between two ``run_until_complete`` calls,
    is left for the next loop that uses the broadcaster.
    """
    return loop.is_running() and not loop.is_closed()
