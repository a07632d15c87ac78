"""The PostgreSQL backend's writer: everything this process appends to the stream itself.

Events handed over from any thread wait in this process (before the backend
starts, in the *held* list; after, in the *outbox*) and one task writes them
in batches, each batch one short transaction: take the stream lock, insert
the rows with their positions, ``NOTIFY``, commit. A failure is retried after
a capped exponential backoff with jitter; events that cannot be written are
dropped, counted in ``stats()["publish_failures"]`` and logged once per outage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from collections import deque
from typing import Any

from psycopg import AsyncConnection, sql

from livepanel.backends.lifecycle import WRITER_MOVES, WriterState, move
from livepanel.backends.postgres.codec import encode_event
from livepanel.backends.postgres.link import (
    close_quietly,
    describe_error,
    finish,
    notify,
    open_connection,
)
from livepanel.backends.postgres.schema import check_survived, qualified
from livepanel.backends.postgres.settings import PostgresSettings, TableNames
from livepanel.errors import BackendUnavailable
from livepanel.events import Event
from livepanel.protocol import make_id

__all__ = ["Writer", "WriterState", "append"]

logger = logging.getLogger("livepanel")

_WRITE_BATCH = 500  # rows per transaction
_Item = tuple[Event | None, str, "asyncio.Future[Event | None] | None"]  # event, body, waiter


async def append(
    conn: AsyncConnection[Any],
    names: TableNames,
    rows: list[tuple[bool, str]],
    lock_timeout: float,
    last_written: list[Any],
) -> tuple[str, list[int]]:
    """Insert ``rows`` (``(is_control, body)``) with positions in commit order, in one
    transaction; return the epoch and their positions, in order, and leave the commit time
    of the last one in ``last_written``.

    Raises:
        psycopg.Error: PostgreSQL refused or could not be reached; nothing was written
            (unless the reply to the commit was lost).

    Example::

        epoch, positions = await append(conn, names, [(False, encode_event(event))], 5.0, [])
    """
    async with conn.transaction():
        await conn.execute(
            "SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout * 1000)}ms",)
        )
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (names.stream_lock,))
        inserted = await conn.execute(
            sql.SQL(
                "INSERT INTO {events} (position, committed_at, control, body) "
                "SELECT nextval({sequence}), clock_timestamp(), c, b "
                "FROM unnest(%s::boolean[], %s::text[]) WITH ORDINALITY AS u(c, b, n) "
                "ORDER BY n RETURNING position, committed_at"
            ).format(
                events=qualified(names, names.events),
                sequence=sql.Literal(f"{names.schema}.{names.sequence}"),
            ),
            ([control for control, _ in rows], [body for _, body in rows]),
        )
        rows_written = sorted((int(row[0]), row[1]) for row in await inserted.fetchall())
        positions = [position for position, _ in rows_written]
        record = await conn.execute(
            sql.SQL("SELECT epoch FROM {}").format(qualified(names, names.meta))
        )
        epoch = await record.fetchone()
        if epoch is None:
            raise LookupError("the stream's epoch record is gone")
        await conn.execute("SELECT pg_notify(%s, '')", (names.channel,))
    if rows_written:
        last_written.clear()
        last_written.append(rows_written[-1][1])
    return str(epoch[0]), positions


class Writer:
    """Writes events and control messages to the stream, in the order they were handed over.

    Args:
        settings: the backend's settings.

    Example::

        writer = Writer(settings)
        writer.publish_nowait(event)  # held until start
        writer.begin(asyncio.get_running_loop())
        await writer.stop(timeout=5.0)  # writes what is queued first
    """

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self.state = WriterState.STOPPED
        self.publish_failures = 0
        """Events dropped: not written to PostgreSQL."""
        self.written: tuple[str, int] | None = None
        """The epoch and position of the newest row this process wrote."""
        self._written_at: list[Any] = []  # when that row committed: how it is known again
        self._lock = threading.Lock()  # the loop and the held events, reached from any thread
        self._held: list[Event] = []
        self._outbox: deque[_Item] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._outage: int | None = None  # events lost since the last write that worked
        self._conn: AsyncConnection[Any] | None = None

    def _enter(self, state: WriterState) -> None:
        self.state = move(WRITER_MOVES, self.state, state)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the writer runs on (``None`` when stopped)."""
        return self._loop

    @property
    def pending(self) -> int:
        """Events waiting for PostgreSQL now."""
        return len(self._outbox) + len(self._held)

    # ------------------------------------------------------------------ lifecycle

    def begin(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start writing on ``loop`` (the running one), held events first."""
        with self._lock:
            self._loop = loop
            self._loop_thread = threading.get_ident()
            self._outbox.extend((event, encode_event(event), None) for event in self._held)
            self._held.clear()
            self._conn = None  # a connection of a closed loop is of no use
            self._enter(WriterState.IDLE)
            self._task = loop.create_task(self._write_forever(), name="livepanel-postgres-writer")

    async def stop(self, timeout: float) -> None:
        """Write what is queued (waiting at most ``timeout``), then stop; what is left fails."""
        task = self._task
        if task is not None and not task.done():
            await self._flush(timeout)
            await finish(task)
        with self._lock:
            self._task = None
            self._loop = None
            self._loop_thread = None
            self._enter(WriterState.STOPPED)
            leftover = list(self._outbox)
            self._outbox.clear()
        conn, self._conn = self._conn, None
        await close_quietly(conn)
        lost = 0
        for _event, _body, future in leftover:
            if future is None:
                lost += 1
            elif not future.done():
                future.set_exception(
                    BackendUnavailable("livepanel: the PostgreSQL backend stopped")
                )
        if lost:
            with self._lock:
                self.publish_failures += lost
            logger.warning("livepanel: %d event(s) not written to PostgreSQL before stop", lost)

    def forget(self) -> None:
        """Let go of a task and a connection whose loop has closed; events that waited
        without a caller wait for the next start."""
        with self._lock:
            self._held[:0] = [event for event, _, future in self._outbox if event and not future]
            self._outbox.clear()
            self._task = self._loop = self._loop_thread = self._conn = None
            self._enter(WriterState.STOPPED)

    async def _flush(self, timeout: float) -> None:
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
            self._enqueue((event, encode_event(event), None))
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, (event, encode_event(event), None))
        except RuntimeError:  # the loop closed under us: write at the next start
            with self._lock:
                self._hold(event)

    async def publish(self, event: Event | None, body: str) -> Event | None:
        """Write one row (an event, or a control message when ``event`` is ``None``) and
        return the event with its id.

        Raises:
            BackendUnavailable: not started on this loop, or PostgreSQL did not take it in time.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None:
            raise BackendUnavailable(
                "livepanel: the PostgreSQL backend is not started in this event loop; "
                "use Broadcaster.apublish(), which starts it"
            )
        future: asyncio.Future[Event | None] = loop.create_future()
        self._enqueue((event, body, future))
        limit = self.settings.timeout * 2
        try:
            return await asyncio.wait_for(future, limit)
        except asyncio.TimeoutError:
            raise BackendUnavailable(
                f"livepanel: PostgreSQL at {self.settings.location} did not confirm the event "
                f"within {limit:g} s"
            ) from None

    async def write_control(self, message: dict[str, Any]) -> None:
        """Append a control row (a revocation) behind what is queued.

        Raises:
            BackendUnavailable: PostgreSQL did not take it.
        """
        await self.publish(None, json.dumps(message, separators=(",", ":")))

    def _hold(self, event: Event) -> None:
        """Keep an event until start (the lock is held)."""
        if len(self._held) >= self.settings.max_pending:
            self.publish_failures += 1
            return
        if not self._held:
            logger.warning(
                "livepanel: events wait in this process until its broadcaster starts; "
                "with several workers, start it at startup (await broadcaster.start())"
            )
        self._held.append(event)

    def _enqueue(self, item: _Item) -> None:
        """Put a row in the outbox (on the loop's thread)."""
        event, _body, future = item
        if self._task is None:  # stopped between the call and now
            if future is not None:
                future.set_exception(
                    BackendUnavailable("livepanel: the PostgreSQL backend stopped")
                )
            elif event is not None:
                with self._lock:
                    self._hold(event)
            return
        limit = self.settings.max_pending
        if len(self._outbox) >= limit:
            if future is not None:
                future.set_exception(
                    BackendUnavailable(f"livepanel: {limit} events already wait for PostgreSQL")
                )
            else:
                self._lost(1, f"{limit} events already wait (max_pending)")
            return
        self._outbox.append(item)
        wake = self._wake
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
                epoch, positions = await self._append(batch)
            except asyncio.CancelledError:
                outbox.extendleft(reversed(batch))  # stop() accounts for them
                raise
            except Exception as exc:
                self._enter(WriterState.BACKING_OFF)
                conn, self._conn = self._conn, None
                await close_quietly(conn)  # a new connection after any failure
                self._write_failed(batch, exc)
                failures += 1
                notify(self._idle_waiters)
                await self._sleep(self.settings.backoff(failures))
                continue
            failures = 0
            if self._outage is not None:
                logger.info(
                    "livepanel: writing to PostgreSQL at %s again; %d event(s) were dropped "
                    "meanwhile",
                    self.settings.location,
                    self._outage,
                )
                self._outage = None
            if positions:
                self.written = (epoch, positions[-1])
            for (event, _body, future), position in zip(batch, positions, strict=False):
                if future is not None and not future.done():
                    stored = event and dataclasses.replace(event, id=make_id(epoch, str(position)))
                    future.set_result(stored)

    async def _sleep(self, timeout: float | None) -> None:
        assert self._loop is not None
        wake = self._wake = self._loop.create_future()
        try:
            await asyncio.wait({wake}, timeout=timeout)
        finally:
            self._wake = None

    async def _append(self, batch: list[_Item]) -> tuple[str, list[int]]:
        settings = self.settings
        if self._conn is None or self._conn.closed:
            conn = await asyncio.wait_for(open_connection(settings), settings.timeout)
            written, self._conn = self.written, conn
            if written is not None and self._written_at:  # did a failover lose our rows?
                await check_survived(conn, settings.names, *written, self._written_at[0])
        rows = [(event is None, body) for event, body, _ in batch]
        return await asyncio.wait_for(
            append(self._conn, settings.names, rows, settings.timeout, self._written_at),
            settings.timeout * 2,
        )

    def _write_failed(self, batch: list[_Item], exc: Exception) -> None:
        message = (
            f"livepanel: PostgreSQL at {self.settings.location} cannot take the event "
            f"({describe_error(exc)}); try again later"
        )
        lost = 0
        for event, _body, future in batch:
            if future is None:
                lost += event is not None
            elif not future.done():
                future.set_exception(BackendUnavailable(message))
        self._lost(lost, describe_error(exc))

    def _lost(self, count: int, reason: str) -> None:
        """Count dropped events; log the first failure of an outage only."""
        with self._lock:
            self.publish_failures += count
        if self._outage is not None:
            self._outage += count
            return
        self._outage = count
        logger.warning(
            "livepanel: cannot write to PostgreSQL at %s (%s); events published meanwhile "
            "are dropped and counted in stats()['publish_failures']",
            self.settings.location,
            reason,
        )
