"""The Redis backend's writer: everything this process appends to the stream.

Events handed over from any thread wait in this process (before the backend
starts, in the *held* list; after, in the *outbox*) and one task writes them
in batches through the publish script. A failure is retried after a capped
exponential backoff with jitter; events that cannot be written are dropped,
counted in ``stats()["publish_failures"]`` and logged once per outage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from collections import deque

from redis.exceptions import RedisError

from livepanel.backends.lifecycle import WRITER_MOVES, WriterState, move
from livepanel.backends.redis.codec import CONTROL_FIELD, FIELD, encode_entry, position
from livepanel.backends.redis.connect import describe_error
from livepanel.backends.redis.link import Link
from livepanel.backends.redis.scripts import state_spec
from livepanel.backends.redis.settings import RedisSettings
from livepanel.backends.redis.tasks import finish, notify
from livepanel.errors import BackendUnavailable
from livepanel.events import Event
from livepanel.protocol import make_id

__all__ = ["Writer", "WriterState"]

logger = logging.getLogger("livepanel")

_WRITE_BATCH = 200  # events per script call
_Item = tuple[Event, "asyncio.Future[Event] | None"]  # an event, and who awaits its id


class _Unreplicated(Exception):
    """Written to the primary, but not confirmed by ``wait_replicas`` replicas in time."""


class Writer:
    """Writes events and control messages to the stream, in the order they were handed over.

    Args:
        settings: the backend's settings.
        link: the backend's client.

    Example::

        writer = Writer(settings, link)
        writer.publish_nowait(event)  # held until start
        writer.begin(asyncio.get_running_loop())
        await writer.stop(timeout=5.0)  # flushes what is queued first
    """

    def __init__(self, settings: RedisSettings, link: Link) -> None:
        self.settings = settings
        self.link = link
        self.state = WriterState.STOPPED
        self.publish_failures = 0
        """Events dropped: not written to Redis."""
        self.written: tuple[str, tuple[int, ...]] | None = None
        """The epoch and position of the newest entry this process wrote."""
        self._lock = threading.Lock()  # the loop and the held events, reached from any thread
        self._held: list[Event] = []  # published before start, in order
        self._outbox: deque[_Item] = deque()
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
        """Events waiting for Redis now."""
        return len(self._outbox) + len(self._held)

    # ------------------------------------------------------------------ lifecycle

    def begin(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start writing on ``loop`` (the running one), held events first."""
        with self._lock:
            self._loop = loop
            self._loop_thread = threading.get_ident()
            # held events go after the head, so the first subscribers see them live
            self._outbox.extend((event, None) for event in self._held)
            self._held.clear()
            self._enter(WriterState.IDLE)
            self._task = loop.create_task(self._write_forever(), name="livepanel-redis-writer")

    async def stop(self, timeout: float) -> None:
        """Write what is queued (waiting at most ``timeout``), then stop; what is left fails."""
        task = self._task
        if task is not None and not task.done():
            await self.flush(timeout)
            await finish(task)
        with self._lock:
            self._task = None
            self._loop = None
            self._loop_thread = None
            self._enter(WriterState.STOPPED)
            leftover = list(self._outbox)
            self._outbox.clear()
        lost = 0
        for _event, future in leftover:
            if future is None:
                lost += 1
            elif not future.done():
                future.set_exception(BackendUnavailable("livepanel: the Redis backend stopped"))
        if lost:
            with self._lock:
                self.publish_failures += lost
            logger.warning("livepanel: %d event(s) not written to Redis before stop", lost)

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
            self._enqueue(event, None)
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, event, None)
        except RuntimeError:  # the loop closed under us: write at the next start
            with self._lock:
                self._hold(event)

    async def publish(self, event: Event) -> Event:
        """Write ``event`` and return it with its id.

        Raises:
            BackendUnavailable: not started on this loop, or Redis did not take it in time.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None:
            raise BackendUnavailable(
                "livepanel: the Redis backend is not started in this event loop; "
                "use Broadcaster.apublish(), which starts it"
            )
        future: asyncio.Future[Event] = loop.create_future()
        self._enqueue(event, future)
        limit = self.settings.timeout * 2
        try:
            return await asyncio.wait_for(future, limit)
        except asyncio.TimeoutError:
            raise BackendUnavailable(
                f"livepanel: Redis at {self.settings.location} did not confirm the event "
                f"within {limit:g} s"
            ) from None

    async def write_control(self, message: dict[str, object]) -> None:
        """Append a control entry now, ahead of queued events.

        Raises:
            BackendUnavailable: Redis did not take it.
        """
        text = json.dumps(message, separators=(",", ":"))
        settings = self.settings
        try:
            scripts = self.link.scripts()
            await asyncio.wait_for(
                scripts.append(
                    settings.keys,
                    maxlen=settings.maxlen,
                    field=CONTROL_FIELD,
                    state_limit=settings.state_limit,
                    texts=[text],
                    specs=[""],
                ),
                settings.timeout,
            )
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise BackendUnavailable(
                f"livepanel: Redis at {settings.location} did not take a control message "
                f"({describe_error(exc)})"
            ) from None

    def _hold(self, event: Event) -> None:
        """Keep an event until start (the lock is held)."""
        if len(self._held) >= self.settings.max_pending:
            self.publish_failures += 1
            return
        self._held.append(event)  # the broadcaster warns when no start is coming

    def _enqueue(self, event: Event, future: asyncio.Future[Event] | None) -> None:
        """Put an event in the outbox (on the loop's thread)."""
        if self._task is None:  # stopped between the call and now
            if future is not None:
                future.set_exception(BackendUnavailable("livepanel: the Redis backend stopped"))
            else:
                with self._lock:
                    self._hold(event)
            return
        limit = self.settings.max_pending
        if len(self._outbox) >= limit:
            if future is not None:
                future.set_exception(
                    BackendUnavailable(f"livepanel: {limit} events already wait for Redis")
                )
            else:
                self._lost(1, f"{limit} events already wait (max_pending)")
            return
        self._outbox.append((event, future))
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
            batch = [outbox.popleft() for _ in range(min(len(outbox), _WRITE_BATCH))]
            self._enter(WriterState.WRITING)
            try:
                epoch, ids = await self._append([event for event, _ in batch])
            except asyncio.CancelledError:
                outbox.extendleft(reversed(batch))  # stop() accounts for them
                raise
            except Exception as exc:
                self._enter(WriterState.BACKING_OFF)  # until the next attempt
                self._write_failed(batch, exc)
                failures += 1
                if isinstance(exc, (RedisError, OSError, _Unreplicated)):
                    await self.link.forget_idle_connections()
                notify(self._idle_waiters)
                await self._sleep(self.settings.backoff(failures))
                continue
            failures = 0
            if self._outage is not None:
                logger.info(
                    "livepanel: writing to Redis at %s again; %d event(s) were dropped meanwhile",
                    self.settings.location,
                    self._outage,
                )
                self._outage = None
            if ids:
                self.written = (epoch, position(ids[-1]))
            for (event, future), entry_id in zip(batch, ids, strict=False):
                if future is not None and not future.done():
                    future.set_result(dataclasses.replace(event, id=make_id(epoch, entry_id)))

    async def _sleep(self, timeout: float | None) -> None:
        assert self._loop is not None
        wake = self._wake = self._loop.create_future()
        try:
            await asyncio.wait({wake}, timeout=timeout)
        finally:
            self._wake = None

    async def _append(self, events: list[Event]) -> tuple[str, list[str]]:
        settings = self.settings
        scripts = self.link.scripts()
        # WAIT counts the replicas that have this connection's writes: one pipeline, one socket
        pipe = scripts.client.pipeline(transaction=False) if settings.wait_replicas else None
        appended = await scripts.append(
            settings.keys,
            maxlen=settings.maxlen,
            field=FIELD,
            state_limit=settings.state_limit,
            texts=[encode_entry(event) for event in events],
            specs=[state_spec(event) for event in events],
            pipeline=pipe,
        )
        if pipe is None:
            return appended
        pipe.execute_command("WAIT", settings.wait_replicas, int(settings.wait_timeout * 1000))
        reply, acked = await pipe.execute()
        if int(acked) < settings.wait_replicas:
            raise _Unreplicated(
                f"livepanel: Redis at {settings.location} stored the event but {acked} of "
                f"{settings.wait_replicas} replica(s) confirmed it within "
                f"{settings.wait_timeout:g} s; a failover may lose it, or it may still be "
                "delivered"
            )
        return scripts.appended(reply)

    def _write_failed(self, batch: list[_Item], exc: Exception) -> None:
        message = (
            str(exc)
            if isinstance(exc, _Unreplicated)
            else f"livepanel: Redis at {self.settings.location} cannot take the event "
            f"({describe_error(exc)}); try again later"
        )
        lost = 0
        for _event, future in batch:
            if future is None:
                lost += 1
            elif not future.done():
                future.set_exception(BackendUnavailable(message))
        self._lost(lost, describe_error(exc))

    def _lost(self, count: int, reason: str) -> None:
        """Count dropped events; log the first failure of an outage only."""
        with self._lock:  # _hold() counts from other threads
            self.publish_failures += count
        if self._outage is not None:
            self._outage += count
            return
        self._outage = count
        logger.warning(
            "livepanel: cannot write to Redis at %s (%s); events published meanwhile "
            "are dropped and counted in stats()['publish_failures']",
            self.settings.location,
            reason,
        )
