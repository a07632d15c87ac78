"""A backend's stream reader: one task per process follows the stream and hands it over.

The task reads round after round; when a round fails it says so once, pauses
with backoff and reconnects (each backend resyncs its own way) before it reads
again. What it reads is folded into the state at its own position and handed
to the broadcaster. Each backend says only how a round reads and how it
reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Generic, TypeVar

from livepanel.backends.base import Control, Deliver, ReaderReport
from livepanel.backends.lifecycle import READER_MOVES, Finish, ReaderState, move, notify
from livepanel.backends.lifecycle import BackendSettings as Settings
from livepanel.events import Event
from livepanel.state import StateFold, StateSnapshot

__all__ = ["FollowingReader"]

logger = logging.getLogger("livepanel")


S = TypeVar("S", bound=Settings)
P = TypeVar("P", int, tuple[int, ...])  # a position in the stream


class FollowingReader(Generic[S, P]):
    """The state machine of a backend's reader; subclasses read and reconnect.

    Args:
        settings: the backend's settings.
        finish: how the backend ends its task for sure.

    Example::

        reader = Reader(settings, link)  # a subclass
        reader.begin(loop, deliver, control, epoch, after="1700000000000-3")
        await reader.status(timeout=2.0)  # {"reachable": True, "running": True, ...}
        await reader.stop()
    """

    _server = "the server"  # its name in messages
    _task_name = "livepanel-reader"
    _resume_message = "livepanel: reading %s again, after %s"  # with :meth:`_resume_args`
    position: P
    """The newest position read (or the one the reader starts after)."""

    def __init__(self, settings: S, finish: Finish) -> None:
        self.settings = settings
        self.state = ReaderState.STOPPED
        self._finish = finish  # ends the task for sure, in the backend's words
        self.epoch: str | None = None
        """The epoch the reader delivers in (``None`` before the first start)."""
        self.fold = StateFold("", limit=settings.state_limit)
        """The state at the reader's position: seeded at start, then folded."""
        self.reconnects = 0
        self._deliver: Deliver | None = None
        self._control: Control | None = None
        self._task: asyncio.Task[None] | None = None
        self._read_waiters: list[asyncio.Future[None]] = []  # state(): the reader moved on
        self._last_read_at = time.monotonic()  # when a read last returned (health)

    def _enter(self, state: ReaderState) -> None:
        self.state = move(READER_MOVES, self.state, state)

    @property
    def running(self) -> bool:
        """The reader's task is alive."""
        task = self._task
        return task is not None and not task.done()

    # ------------------------------------------------------------------ what a backend says

    async def _read_round(self) -> None:
        """Read once (or wait for news) and hand over what came."""
        raise NotImplementedError

    async def _reconnect(self) -> None:
        """Before reading again after a failure: connect, and resync with the stream."""
        raise NotImplementedError

    def _resume_args(self) -> tuple[object, object]:
        """The stream and the place reading goes on after, for :attr:`_resume_message`."""
        raise NotImplementedError

    def _say_lost(self, exc: Exception) -> None:
        """Say that a read failed (once per outage)."""
        raise NotImplementedError

    async def _release(self) -> None:
        """Let go of a connection a failure or a stop leaves behind."""

    # ------------------------------------------------------------------ lifecycle

    def _begin(
        self,
        loop: asyncio.AbstractEventLoop,
        deliver: Deliver,
        control: Control | None,
        epoch: str,
    ) -> None:
        """Deliver in ``epoch`` from the reader's position on, from a task on ``loop``."""
        self._deliver = deliver
        self._control = control
        self.epoch = epoch
        self._enter(ReaderState.READING)
        self._task = loop.create_task(self._read_forever(), name=self._task_name)

    async def stop(self) -> None:
        """Stop reading; deliver nothing more."""
        task = self._task
        if task is not None:
            await self._finish(task)
        self._task = None
        self._deliver = None
        self._control = None
        await self._release()
        self._enter(ReaderState.STOPPED)

    # ------------------------------------------------------------------ the state

    async def _wait_for(
        self, loop: asyncio.AbstractEventLoop, written: tuple[str, P] | None, timeout: float
    ) -> None:
        """Wait, at most ``timeout``, until the reader has read ``written``."""
        deadline = loop.time() + timeout
        while written is not None and written[0] == self.epoch:
            remaining = deadline - loop.time()
            if self.position >= written[1] or remaining <= 0:
                break
            waiter = loop.create_future()
            self._read_waiters.append(waiter)
            await asyncio.wait({waiter}, timeout=remaining)

    def snapshot(self) -> StateSnapshot:
        """The state at the reader's position."""
        return self.fold.snapshot()

    # ------------------------------------------------------------------ the task

    async def _read_forever(self) -> None:
        failures = 0
        while True:
            try:
                if self.state is ReaderState.RECONNECTING:
                    await self._reconnect()
                    self._enter(ReaderState.READING)
                    failures = 0
                    self.reconnects += 1
                    logger.info(self._resume_message, *self._resume_args())
                await self._read_round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.state is ReaderState.READING:
                    self._say_lost(exc)
                    self._enter(ReaderState.RECONNECTING)
                await self._release()
                failures += 1
                await asyncio.sleep(self.settings.backoff(failures))

    def _lost_warning(self, reason: str) -> None:
        logger.warning(
            f"livepanel: lost {self._server} at %s while reading events (%s); "
            "reconnecting with backoff",
            self.settings.location,
            reason,
        )

    def _hand_over(self, events: list[Event]) -> None:
        """Fold ``events`` into the state and deliver them."""
        if not events:
            return
        self.fold.apply_all(events)
        deliver = self._deliver
        if deliver is not None:
            try:
                deliver(events)
            except Exception:
                logger.exception(f"livepanel: delivering events from {self._server} failed")

    def _moved_on(self) -> None:
        """Wake those who wait for the reader to move on."""
        notify(self._read_waiters)

    # ------------------------------------------------------------------ health

    def _report(self) -> ReaderReport:
        """A report of a reader whose server was not asked (yet)."""
        running = self.running
        return {
            "reachable": False,
            "running": running,
            "waiting": False,
            "lagSeconds": None,
            "idleSeconds": time.monotonic() - self._last_read_at if running else None,
        }
