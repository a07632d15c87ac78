"""What a process reads of the stream's past, each in one snapshot: a ``since`` range, the
state at start; and retention, which trims the oldest rows and folds them into the stored state.

The stored state holds the fold of every event up to ``meta.state_through``;
the state at the newest row is that fold plus the events still in the table
after it, read in the same ``REPEATABLE READ`` snapshot. Retention deletes
rows and folds the ones it deletes into the stored state in one transaction,
so the two always add up to a stream position. It never takes the stream
lock: publishers insert while it deletes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, sql

from livepanel.backends.postgres.codec import RejectedRow, decode_row
from livepanel.backends.postgres.link import close_quietly, open_connection
from livepanel.backends.postgres.schema import qualified, read_epoch
from livepanel.backends.postgres.settings import PostgresSettings, TableNames
from livepanel.events import Event
from livepanel.protocol import parse_id
from livepanel.state import StateFold

__all__ = ["Queries", "Seed", "replay", "seed", "trim"]

logger = logging.getLogger("livepanel")

T = TypeVar("T")

_PAGE = 1000  # rows per fetch of a replay or a seed
_TRIM_BATCH = 10_000  # rows one retention round deletes at most


class Queries:
    """One connection for the backend's occasional queries (replays, the state at start,
    health, claims, presence, retention), taken one at a time and reopened after a failure.

    Args:
        settings: the backend's settings.

    Example::

        async with queries.connection() as conn:
            await conn.execute("SELECT 1")
    """

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self._conn: AsyncConnection[Any] | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """The connection, to this caller alone until the block ends.

        Raises:
            psycopg.Error: PostgreSQL cannot be reached (the next caller reconnects).
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop: the old one's connection went with it
            self._loop, self._lock, self._conn = loop, asyncio.Lock(), None
        assert self._lock is not None
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await asyncio.wait_for(
                    open_connection(self.settings), self.settings.timeout
                )
            try:
                yield self._conn
            except BaseException:
                conn, self._conn = self._conn, None
                await close_quietly(conn)  # its state is unknown: start the next one afresh
                raise

    async def run(self, job: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """``job(connection)``, once more on a new connection when the one held turned out
        broken (a server restarted since it was last used).

        Raises:
            psycopg.Error: PostgreSQL cannot be reached, or refused the job.
        """
        try:
            async with self.connection() as conn:
                return await job(conn)
        except psycopg.OperationalError:
            async with self.connection() as conn:
                return await job(conn)

    async def close(self) -> None:
        """Close the connection."""
        conn, self._conn = self._conn, None
        await close_quietly(conn)


@dataclasses.dataclass
class Seed:
    """The stream as one snapshot saw it: where a reader starts, with the state there.

    Example::

        seeded = await seed(conn, names, fold)
        reader.begin(loop, deliver, control, seeded)
    """

    epoch: str
    head: int
    """The newest position (an event's, a control message's, or the epoch's base)."""
    head_at: datetime.datetime | None
    """When the row at ``head`` was committed (``None`` for the base)."""


async def _snapshot(conn: AsyncConnection[Any]) -> None:
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


async def replay(conn: AsyncConnection[Any], names: TableNames, since: str) -> list[Event] | None:
    """Every retained event after ``since``, or ``None`` when it is not from the current epoch
    or no longer (or never) in the table, read in one snapshot.

    Example::

        events = await replay(conn, names, "3f9c1a2b4d5e:41")
    """
    epoch, parts = parse_id(since)
    if len(parts) != 1 or parts[0] >= 2**63:
        return None
    position = parts[0]
    events = qualified(names, names.events)
    async with conn.transaction():
        await _snapshot(conn)
        record = await read_epoch(conn, names)
        if record is None or record[0] != epoch:
            return None
        _, base, trimmed, _ = record
        if position == base:
            if trimmed > base:
                return None  # the epoch's first rows were trimmed
        elif position < base:
            return None
        else:
            anchor = await conn.execute(
                sql.SQL("SELECT 1 FROM {} WHERE position = %s").format(events), (position,)
            )
            if await anchor.fetchone() is None:
                return None
        found: list[Event] = []
        async for row in _rows_after(conn, events, position):
            if not row[1]:
                try:
                    found.append(decode_row(row[2], epoch, row[0]))
                except RejectedRow:
                    continue  # logged and counted when the reader met it
        return found


async def _rows_after(
    conn: AsyncConnection[Any], events: sql.Identifier, position: int
) -> AsyncIterator[tuple[int, bool, str, datetime.datetime]]:
    """The rows after ``position``, a page at a time, in stream order."""
    while True:
        cursor = await conn.execute(
            sql.SQL(
                "SELECT position, control, body, committed_at FROM {} WHERE position > %s "
                "ORDER BY position LIMIT %s"
            ).format(events),
            (position, _PAGE),
        )
        rows = await cursor.fetchall()
        for row in rows:
            yield int(row[0]), bool(row[1]), str(row[2]), row[3]
        if len(rows) < _PAGE:
            return
        position = int(rows[-1][0])


async def seed(conn: AsyncConnection[Any], names: TableNames, fold: StateFold) -> Seed:
    """Load ``fold`` with the state at the newest row, read in one snapshot with that row.

    Example::

        seeded = await seed(conn, names, reader.fold)  # the reader starts after seeded.head
    """
    async with conn.transaction():
        await _snapshot(conn)
        record = await read_epoch(conn, names)
        if record is None:
            raise LookupError("the stream's epoch record is gone")
        epoch, base, _, through = record
        fold.reset(epoch)
        stored = await conn.execute(
            sql.SQL("SELECT position, body FROM {} ORDER BY position").format(
                qualified(names, names.state)
            )
        )
        for position, body in await stored.fetchall():
            with contextlib.suppress(RejectedRow):  # a type this process does not know
                fold.apply(decode_row(body, epoch, int(position)))
        head, head_at = max(base, through), None
        async for position, control, body, committed_at in _rows_after(
            conn, qualified(names, names.events), head
        ):
            head, head_at = position, committed_at
            if not control:
                with contextlib.suppress(RejectedRow):
                    fold.apply(decode_row(body, epoch, position))
        fold.last_event_id = f"{epoch}:{head}"
        return Seed(epoch, head, head_at)


async def trim(conn: AsyncConnection[Any], settings: PostgresSettings) -> int:
    """One retention round: delete the rows beyond ``history`` and older than ``max_age``
    (never the newest), folding the deleted events into the stored state; return how many
    rows went. A round another worker is running is not waited for.

    Example::

        async with queries.connection() as conn:
            trimmed = await trim(conn, settings)
    """
    names = settings.names
    events = qualified(names, names.events)
    async with conn.transaction():
        taken = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (names.trim_lock,))
        row = await taken.fetchone()
        if not (row and row[0]):
            return 0
        locked = await conn.execute(
            sql.SQL("SELECT epoch, base, trimmed, state_through FROM {} FOR UPDATE").format(
                qualified(names, names.meta)
            )
        )
        record = await locked.fetchone()
        if record is None:
            return 0
        epoch, base, trimmed, through = str(record[0]), *(int(v) for v in record[1:])
        cutoff = await _cutoff(conn, settings, events, trimmed)
        await conn.execute(
            sql.SQL("DELETE FROM {} WHERE expires < now()").format(qualified(names, names.claims))
        )
        if cutoff <= trimmed:
            return 0
        deleted = await conn.execute(
            sql.SQL("DELETE FROM {} WHERE position <= %s RETURNING position, control, body").format(
                events
            ),
            (cutoff,),
        )
        rows = sorted((int(p), bool(c), str(b)) for p, c, b in await deleted.fetchall())
        foldable = [(p, b) for p, c, b in rows if p > max(base, through) and not c]
        if foldable:
            await _fold_into_state(conn, settings, epoch, foldable)
        await conn.execute(
            sql.SQL(
                "UPDATE {} SET trimmed = %s, state_through = greatest(state_through, %s)"
            ).format(qualified(names, names.meta)),
            (cutoff, cutoff),
        )
        return len(rows)


async def _cutoff(
    conn: AsyncConnection[Any], settings: PostgresSettings, events: sql.Identifier, trimmed: int
) -> int:
    """The newest position this round may delete (``trimmed`` when none)."""
    cursor = await conn.execute(
        sql.SQL(
            "SELECT max(position), (SELECT position FROM {events} WHERE position > %s "
            "ORDER BY position OFFSET %s LIMIT 1) FROM {events}"
        ).format(events=events),
        (trimmed, _TRIM_BATCH - 1),
    )
    newest, batch_end = await _one(cursor)
    if newest is None:
        return trimmed
    cutoff = trimmed
    if int(newest) - trimmed > settings.history:  # positions may have gaps: count only then
        counted = await conn.execute(
            sql.SQL(
                "SELECT position FROM {} WHERE position IS NOT NULL ORDER BY position DESC "
                "OFFSET %s LIMIT 1"
            ).format(events),
            (settings.history,),
        )
        (by_count,) = await _one(counted)
        cutoff = max(cutoff, int(by_count) if by_count is not None else trimmed)
    if settings.max_age is not None:
        aged = await conn.execute(
            sql.SQL(
                "SELECT max(position) FROM (SELECT position, committed_at FROM {} "
                "WHERE position > %s ORDER BY position LIMIT %s) s "
                "WHERE committed_at < now() - make_interval(secs => %s)"
            ).format(events),
            (trimmed, _TRIM_BATCH, settings.max_age),
        )
        (by_age,) = await _one(aged)
        cutoff = max(cutoff, int(by_age) if by_age is not None else trimmed)
    cutoff = min(cutoff, int(newest) - 1)  # the newest row stays: it anchors resumes
    if batch_end is not None:
        cutoff = min(cutoff, int(batch_end))
    return cutoff


async def _one(cursor: Any) -> tuple[Any, ...]:
    row = await cursor.fetchone()
    assert row is not None
    return tuple(row)


async def _fold_into_state(
    conn: AsyncConnection[Any], settings: PostgresSettings, epoch: str, rows: list[tuple[int, str]]
) -> None:
    """Fold the deleted events into the stored state and write back what changed."""
    table = qualified(settings.names, settings.names.state)
    fold = StateFold(epoch, limit=settings.state_limit)
    cursor = await conn.execute(sql.SQL("SELECT position, body FROM {}").format(table))
    before: dict[int, str] = {int(p): str(b) for p, b in await cursor.fetchall()}
    bodies = {**before, **dict(rows)}
    for position in sorted(bodies):
        with contextlib.suppress(RejectedRow):  # a type this process does not know
            fold.apply(decode_row(bodies[position], epoch, position))
    kept = {
        parse_id(event.id)[1][0]
        for entries in fold.snapshot().collections.values()
        for event in entries
        if event.id is not None
    }
    gone = [p for p in before if p not in kept]
    added = [(p, bodies[p]) for p in sorted(kept) if p not in before]
    if gone:
        await conn.execute(
            sql.SQL("DELETE FROM {} WHERE position = ANY(%s)").format(table), (gone,)
        )
    if added:
        async with conn.cursor() as cur:
            await cur.executemany(
                sql.SQL("INSERT INTO {} (position, body) VALUES (%s, %s)").format(table), added
            )
    if fold.evicted:
        logger.warning(
            "livepanel: %d state entries evicted by state_limit=%d while trimming",
            fold.evicted,
            settings.state_limit,
        )
