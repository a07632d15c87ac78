"""The PostgreSQL backend's reader: one task per process hands new rows to the broadcaster.

It listens on the stream's channel and, on each notification or every
``poll_interval`` seconds without one (a notification missed while it
reconnected, or lost to a proxy, is caught up this way), reads the rows after
the last position it saw, in one statement that also reads the epoch record
and the row it saw last. Positions are handed out in commit order (see
:mod:`livepanel.backends.postgres.schema`), so "after the last position" never
skips a row. When the row it saw last is gone though it was neither trimmed
nor before the epoch (a replica that lacked the newest rows was promoted, a
backup was restored), positions may be issued again: it begins a new epoch.
It keeps the state fold at its own position, so a snapshot always matches a
position of the stream.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Any

from psycopg import AsyncConnection, sql

from livepanel.backends.base import Control, Deliver, ReaderReport
from livepanel.backends.following import FollowingReader
from livepanel.backends.lifecycle import ReaderState
from livepanel.backends.postgres.codec import RejectedRow, control_of, decode_row
from livepanel.backends.postgres.link import (
    close_quietly,
    describe_error,
    finish,
    open_connection,
)
from livepanel.backends.postgres.queries import Queries, Seed
from livepanel.backends.postgres.schema import check_survived, qualified, read_epoch
from livepanel.backends.postgres.settings import PostgresSettings
from livepanel.events import Event
from livepanel.protocol import make_id

__all__ = ["Reader", "ReaderState"]

logger = logging.getLogger("livepanel")

_READ_COUNT = 1000  # rows per read


_Row = tuple[Any, ...]


class Reader(FollowingReader[PostgresSettings, int]):
    """Delivers the stream's new rows in order, and folds them into the state.

    Args:
        settings: the backend's settings.
        queries: the backend's connection for occasional queries (health asks through it).

    Example::

        reader = Reader(settings, queries)
        reader.begin(loop, deliver, control, seeded)
        await reader.status(timeout=2.0)  # {"reachable": True, "running": True, ...}
        await reader.stop()
    """

    _server = "PostgreSQL"
    _task_name = "livepanel-postgres-reader"
    _resume_message = "livepanel: reading %s from PostgreSQL again, after position %d"

    def __init__(self, settings: PostgresSettings, queries: Queries) -> None:
        super().__init__(settings, finish)
        self.queries = queries
        self.position = 0
        self.position_at: datetime.datetime | None = None
        """When the row at :attr:`position` was committed: how the reader knows it again."""
        self.rejected_rows = 0
        """Rows skipped because they are not valid events."""
        self._conn: AsyncConnection[Any] | None = None
        self._behind_warned = False

    @property
    def head_id(self) -> str:
        """The id of the reader's position."""
        assert self.epoch is not None
        return make_id(self.epoch, str(self.position))

    # ------------------------------------------------------------------ lifecycle

    def begin(
        self,
        loop: asyncio.AbstractEventLoop,
        deliver: Deliver,
        control: Control | None,
        seeded: Seed,
        conn: AsyncConnection[Any],
    ) -> None:
        """Deliver what follows ``seeded.head`` from a task on ``loop``, listening on ``conn``
        (already ``LISTEN``-ing)."""
        self.position, self.position_at = seeded.head, seeded.head_at
        self._conn = conn
        self._begin(loop, deliver, control, seeded.epoch)

    def forget(self) -> None:
        """Let go of a task and a connection whose loop has closed."""
        self._task = None
        self._conn = None
        self._enter(ReaderState.STOPPED)

    async def listen(self) -> AsyncConnection[Any]:
        """A new connection listening on the stream's channel.

        Raises:
            psycopg.Error: PostgreSQL cannot be reached.
        """
        conn = await asyncio.wait_for(open_connection(self.settings), self.settings.timeout)
        try:
            await conn.execute(
                sql.SQL("LISTEN {}").format(sql.Identifier(self.settings.names.channel))
            )
        except BaseException:
            await close_quietly(conn)
            raise
        return conn

    # ------------------------------------------------------------------ the state

    async def caught_up(self, written: tuple[str, int] | None, timeout: float) -> None:
        """Wait, at most ``timeout``, until the reader has read ``written`` (this process's
        newest row), so that the state it answers holds what this process wrote."""
        await self._wait_for(asyncio.get_running_loop(), written, timeout)

    # ------------------------------------------------------------------ the task

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        await close_quietly(conn)

    async def _reconnect(self) -> None:
        self._conn = await self.listen()

    def _resume_args(self) -> tuple[object, object]:
        return self.settings.names.events, self.position

    def _say_lost(self, exc: Exception) -> None:
        self._lost_warning(describe_error(exc))

    async def _read_round(self) -> None:
        assert self._conn is not None
        while await self._read_once(self._conn):
            pass  # a full page: more may follow at once
        await self._wait_for_news(self._conn)

    async def _wait_for_news(self, conn: AsyncConnection[Any]) -> None:
        """Until a notification arrives, or ``poll_interval`` seconds pass without one."""
        async for _ in conn.notifies(timeout=self.settings.poll_interval, stop_after=1):
            pass

    async def _read_once(self, conn: AsyncConnection[Any]) -> bool:
        """Read and deliver the next rows; ``True`` when a full page came (read again)."""
        names = self.settings.names
        events = qualified(names, names.events)
        cursor = await asyncio.wait_for(
            conn.execute(
                sql.SQL(
                    "SELECT m.epoch, m.base, m.trimmed, "
                    "(SELECT committed_at FROM {events} WHERE position = %(last)s), "
                    "e.position, e.control, e.body, e.committed_at "
                    "FROM {meta} m LEFT JOIN LATERAL (SELECT position, control, body, "
                    "committed_at FROM {events} WHERE position > %(last)s "
                    "ORDER BY position LIMIT %(count)s) e ON true ORDER BY e.position"
                ).format(events=events, meta=qualified(names, names.meta)),
                {"last": self.position, "count": _READ_COUNT},
            ),
            self.settings.timeout,
        )
        rows = await cursor.fetchall()
        self._last_read_at = time.monotonic()
        if not rows:
            raise LookupError("the stream's epoch record is gone")  # reconnecting recreates it
        epoch, base, trimmed, anchor = rows[0][0], int(rows[0][1]), int(rows[0][2]), rows[0][3]
        if epoch != self.epoch:
            self._adopt(str(epoch), base)
            return True
        if self.position > base and anchor != self.position_at:
            if self.position > trimmed:
                await self._retire(conn)
                return True
            if not self._behind_warned:
                self._behind_warned = True
                logger.warning(
                    "livepanel: rows of %s after position %d were trimmed before this process "
                    "read them; raise history (or max_age) so the stream outlasts outages",
                    names.events,
                    self.position,
                )
        found = [row[4:] for row in rows if row[4] is not None]
        if found:
            self._deliver_rows(found)
        return len(found) == _READ_COUNT

    def _deliver_rows(self, rows: list[_Row]) -> None:
        epoch = self.epoch
        assert epoch is not None
        events: list[Event] = []
        for position, control, body, _ in rows:
            if control:  # a revocation, in stream order with the events
                self._hand_over(events)
                events = []
                message = control_of(body)
                if self._control is not None and message:
                    self._control(message)
                continue
            try:
                events.append(decode_row(body, epoch, int(position)))
            except RejectedRow as exc:
                self.rejected_rows += 1
                logger.warning(
                    "livepanel: skipped row at position %d of %s: %s (counted in "
                    "stats()['rejected_entries'])",
                    position,
                    self.settings.names.events,
                    exc.reason,
                )
        self.position, self.position_at = int(rows[-1][0]), rows[-1][3]
        self._hand_over(events)
        self._moved_on()

    # ------------------------------------------------------------------ epochs

    async def _retire(self, conn: AsyncConnection[Any]) -> None:
        """The row read last is gone: positions may be issued again, so begin a new epoch
        after the newest row committed before it (unless another process did already)."""
        assert self.epoch is not None
        record = await check_survived(
            conn, self.settings.names, self.epoch, self.position, self.position_at
        )
        if record is None:
            record = await read_epoch(conn, self.settings.names)
        if record is not None and record[0] != self.epoch:
            logger.warning(
                "livepanel: PostgreSQL stream %s lost its newest rows (position %d is gone); "
                "a new epoch begins after position %d",
                self.settings.names.events,
                self.position,
                record[1],
            )
            self._adopt(record[0], record[1])

    def _adopt(self, epoch: str, base: int) -> None:
        """Deliver in ``epoch`` from its base on, with an empty state."""
        old = self.epoch
        self.epoch = epoch
        self.position, self.position_at = base, None
        self.fold.reset(epoch, make_id(epoch, str(base)))
        logger.warning(
            "livepanel: PostgreSQL stream %s is in a new epoch %s (was %s): its history was "
            "lost or replaced, so clients resuming from before will refetch their state",
            self.settings.names.events,
            epoch,
            old,
        )

    # ------------------------------------------------------------------ health

    async def status(self, timeout: float = 2.0) -> ReaderReport:
        """Where the reader stands: rows committed that it has not read, and a commit
        holding the stream lock (since its session last changed state: how long it has
        held the stream back; publishers wait behind it)."""
        status = self._report()
        idle = status["idleSeconds"]
        names = self.settings.names
        classid, objid = names.lock_parts()

        async def ask(conn: AsyncConnection[Any]) -> Any:
            cursor = await conn.execute(
                sql.SQL(
                    "SELECT extract(epoch FROM clock_timestamp() - (SELECT committed_at "
                    "FROM {} WHERE position > %s ORDER BY position LIMIT 1)), "
                    "extract(epoch FROM clock_timestamp() - (SELECT min(coalesce("
                    "a.state_change, a.query_start, l.waitstart)) FROM pg_locks l "
                    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.granted "
                    "AND l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s "
                    "AND l.objsubid = 1))"
                ).format(qualified(names, names.events)),
                (self.position, classid, objid),
            )
            return await cursor.fetchone()

        try:
            row = await asyncio.wait_for(self.queries.run(ask), timeout)
        except Exception:  # unreachable, slow, or a connection in a bad state: all unhealthy
            return status
        status["reachable"] = True
        unread, held = (None, None) if row is None else row
        lags = [float(v) for v in (unread, held) if v is not None]
        status["waiting"] = bool(lags)
        status["lagSeconds"] = max(0.0, *lags) if lags else 0.0
        if held is not None and idle is not None:
            # a commit holds the stream lock: reading goes on, yet nothing can come through
            status["idleSeconds"] = max(idle, float(held))
        return status
