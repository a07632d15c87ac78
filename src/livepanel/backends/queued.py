"""A backend's queued writer: events handed over from any thread, written by one task.

Events wait in this process (before the backend starts, in the *held* list;
after, in the *outbox*) and one task writes them in batches, in the order they
were handed over. A failure is retried after a capped exponential backoff with
jitter; events that cannot be written are dropped, counted in
``stats()["publish_failures"]`` and logged once per outage. Each backend says
only how a batch is written (:meth:`QueuedWriter._append`) and what a failure
leaves to clean up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections import deque
from typing import Generic, TypeVar

from livepanel.backends.lifecycle import (
    WRITER_MOVES,
    BackendSettings,
    Finish,
    WriterState,
    move,
    notify,
)
from livepanel.errors import BackendUnavailable
from livepanel.events import Event
from livepanel.protocol import make_id

__all__ = ["QueuedWriter"]

logger = logging.getLogger("livepanel")


S = TypeVar("S", bound=BackendSettings)
B = TypeVar("B")  # what the backend writes for an item
P = TypeVar("P")  # a position in the stream

# an event (None: a control message), what is written for it, and who awaits its id
_Item = tuple[Event | None, B, "asyncio.Future[Event | None] | None"]


class QueuedWriter(Generic[S, B, P]):
    """The state machine and the queue of a backend's writer; subclasses write the batches.

    Args:
        settings: the backend's settings.
        finish: how the backend ends its task for sure.

    Example::

        writer = Writer(settings)  # a subclass
        writer.publish_nowait(event)  # held until start
        writer.begin(asyncio.get_running_loop())
        await writer.stop(timeout=5.0)  # writes what is queued first
    """

    _server = "the server"  # its name in messages
    _task_name = "livepanel-writer"
    _batch_size = 200  # items per write
    _held_warning: str | None = None  # logged when the first event is held, if any

    def __init__(self, settings: S, finish: Finish) -> None:
        self.settings = settings
        self._finish = finish
        self.state = WriterState.STOPPED
        self.publish_failures = 0
        """Events dropped: not written to the server."""
        self.written: tuple[str, P] | None = None
        """The epoch and position of the newest item this process wrote."""
        self._lock = threading.Lock()  # the loop and the held events, reached from any thread
        self._held: list[Event] = []  # published before start, in order
        self._outbox: deque[_Item[B]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._outage: int | None = None  # events lost since the last write that worked

    def _enter(self, state: WriterState) -> None:
        self.state = move(WRITER_MOVES, self.state, state)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the writer runs on (``None`` when stopped)."""
        return self._loop

    @property
    def pending(self) -> int:
        """Events waiting for the server now."""
        return len(self._outbox) + len(self._held)

    # ------------------------------------------------------------------ what a backend says

    def _body(self, event: Event) -> B:
        """What is queued to be written for ``event`` (on the calling thread)."""
        raise NotImplementedError

    async def _append(self, batch: list[_Item[B]]) -> tuple[str, list[str]]:
        """Write ``batch``; the epoch and the ids (within it) of what was written, in order."""
        raise NotImplementedError

    def _position(self, entry_id: str) -> P:
        """The position of the item with id ``entry_id``."""
        raise NotImplementedError

    async def _failed(self, batch: list[_Item[B]], exc: Exception) -> None:
        """``batch`` was not written: fail it (see :meth:`_drop`) and clean up."""
        raise NotImplementedError

    async def _release(self) -> None:
        """Let go of what the task held, once it is stopped."""

    # ------------------------------------------------------------------ lifecycle

    def begin(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start writing on ``loop`` (the running one), held events first."""
        with self._lock:
            self._loop = loop
            self._loop_thread = threading.get_ident()
            # held events go after the head, so the first subscribers see them live
            self._outbox.extend((event, self._body(event), None) for event in self._held)
            self._held.clear()
            self._enter(WriterState.IDLE)
            self._task = loop.create_task(self._write_forever(), name=self._task_name)

    async def stop(self, timeout: float) -> None:
        """Write what is queued (waiting at most ``timeout``), then stop; what is left fails."""
        task = self._task
        if task is not None and not task.done():
            await self.flush(timeout)
            await self._finish(task)
        with self._lock:
            self._task = None
            self._loop = None
            self._loop_thread = None
            self._enter(WriterState.STOPPED)
            leftover = list(self._outbox)
            self._outbox.clear()
        await self._release()
        lost = 0
        for _event, _body, future in leftover:
            if future is None:
                lost += 1
            elif not future.done():
                future.set_exception(
                    BackendUnavailable(f"livepanel: the {self._server} backend stopped")
                )
        if lost:
            with self._lock:
                self.publish_failures += lost
            logger.warning(
                f"livepanel: %d event(s) not written to {self._server} before stop", lost
            )

    async def flush(self, timeout: float) -> None:
        """Wait until the writer has tried everything queued, at most ``timeout``."""
        assert self._loop is not None
        deadline = self._loop.time() + timeout
        while self._outbox or self.state is WriterState.WRITING:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return
            waiter = self._loop.create_future()
            self._idle_waiters.append(waiter)
            wake = self._wake
            if wake is not None and not wake.done():
                wake.set_result(None)  # skip a backoff pause: we are shutting down
            await asyncio.wait({waiter}, timeout=remaining)
            if self.state is WriterState.BACKING_OFF and not self._outbox:
                return

    # ------------------------------------------------------------------ handing events over

    def publish_nowait(self, event: Event) -> None:
        """Queue ``event`` from any thread; never blocks, never raises."""
        with self._lock:
            loop = self._loop
            if loop is None:
                self._hold(event)
                return
        if threading.get_ident() == self._loop_thread:
            self._enqueue((event, self._body(event), None))
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, (event, self._body(event), None))
        except RuntimeError:  # the loop closed under us: write at the next start
            with self._lock:
                self._hold(event)

    async def _submit(self, event: Event | None, body: B) -> Event | None:
        """Queue one item and wait for it to be written; the event with its id.

        Raises:
            BackendUnavailable: not started on this loop, or the server did not take it in time.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None:
            raise BackendUnavailable(
                f"livepanel: the {self._server} backend is not started in this event loop; "
                "use Broadcaster.apublish(), which starts it"
            )
        future: asyncio.Future[Event | None] = loop.create_future()
        self._enqueue((event, body, future))
        limit = self.settings.timeout * 2
        try:
            return await asyncio.wait_for(future, limit)
        except asyncio.TimeoutError:
            raise BackendUnavailable(
                f"livepanel: {self._server} at {self.settings.location} did not confirm the "
                f"event within {limit:g} s"
            ) from None

    def _hold(self, event: Event) -> None:
        """Keep an event until start (the lock is held)."""
        if len(self._held) >= self.settings.max_pending:
            self.publish_failures += 1
            return
        if not self._held and self._held_warning is not None:
            logger.warning(self._held_warning)
        self._held.append(event)

    def _enqueue(self, item: _Item[B]) -> None:
        """Put an item in the outbox (on the loop's thread)."""
        event, _body, future = item
        if self._task is None:  # stopped between the call and now
            if future is not None:
                future.set_exception(
                    BackendUnavailable(f"livepanel: the {self._server} backend stopped")
                )
            elif event is not None:
                with self._lock:
                    self._hold(event)
            return
        limit = self.settings.max_pending
        if len(self._outbox) >= limit:
            if future is not None:
                future.set_exception(
                    BackendUnavailable(f"livepanel: {limit} events already wait for {self._server}")
                )
            else:
                self._lost(1, f"{limit} events already wait (max_pending)")
            return
        self._outbox.append(item)
        wake = self._wake
        # during a backoff pause only a waiting apublish() brings the next attempt forward
        if (
            wake is not None
            and not wake.done()
            and (future is not None or self.state is not WriterState.BACKING_OFF)
        ):
            wake.set_result(None)

    # ------------------------------------------------------------------ the task

    async def _write_forever(self) -> None:
        failures = 0
        while True:
            if not self._outbox:
                self._enter(WriterState.IDLE)
                notify(self._idle_waiters)
                await self._sleep(None)
                continue
            outbox = self._outbox
            batch = [outbox.popleft() for _ in range(min(len(outbox), self._batch_size))]
            self._enter(WriterState.WRITING)
            try:
                epoch, ids = await self._append(batch)
            except asyncio.CancelledError:
                outbox.extendleft(reversed(batch))  # stop() accounts for them
                raise
            except Exception as exc:
                self._enter(WriterState.BACKING_OFF)  # until the next attempt
                await self._failed(batch, exc)
                failures += 1
                notify(self._idle_waiters)
                await self._sleep(self.settings.backoff(failures))
                continue
            failures = 0
            if self._outage is not None:
                logger.info(
                    f"livepanel: writing to {self._server} at %s again; %d event(s) were "
                    "dropped meanwhile",
                    self.settings.location,
                    self._outage,
                )
                self._outage = None
            if ids:
                self.written = (epoch, self._position(ids[-1]))
            for (event, _body, future), entry_id in zip(batch, ids, strict=False):
                if future is not None and not future.done():
                    future.set_result(
                        event and dataclasses.replace(event, id=make_id(epoch, entry_id))
                    )

    async def _sleep(self, timeout: float | None) -> None:
        assert self._loop is not None
        wake = self._wake = self._loop.create_future()
        try:
            await asyncio.wait({wake}, timeout=timeout)
        finally:
            self._wake = None

    def _cannot_take(self, reason: str) -> str:
        """What a caller whose event failed is told."""
        return (
            f"livepanel: {self._server} at {self.settings.location} cannot take the event "
            f"({reason}); try again later"
        )

    def _drop(self, batch: list[_Item[B]], message: str, reason: str) -> None:
        """Fail the callers in ``batch`` with ``message``; count and log the rest as lost."""
        lost = 0
        for event, _body, future in batch:
            if future is None:
                lost += event is not None
            elif not future.done():
                future.set_exception(BackendUnavailable(message))
        self._lost(lost, reason)

    def _lost(self, count: int, reason: str) -> None:
        """Count dropped events; log the first failure of an outage only."""
        with self._lock:  # _hold() counts from other threads
            self.publish_failures += count
        if self._outage is not None:
            self._outage += count
            return
        self._outage = count
        logger.warning(
            f"livepanel: cannot write to {self._server} at %s (%s); events published meanwhile "
            "are dropped and counted in stats()['publish_failures']",
            self.settings.location,
            reason,
        )
