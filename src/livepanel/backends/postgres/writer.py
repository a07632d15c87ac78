"""The PostgreSQL backend's writer: everything this process appends to the stream itself.

Events handed over from any thread wait in this process and one task writes
them in batches (see :mod:`livepanel.backends.queued`), each batch one short
transaction: take the stream lock, insert the rows with their positions,
``NOTIFY``, commit. After a failure the next batch opens a new connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from psycopg import AsyncConnection, sql

from livepanel.backends.lifecycle import WriterState
from livepanel.backends.postgres.codec import encode_event
from livepanel.backends.postgres.link import close_quietly, describe_error, finish, open_connection
from livepanel.backends.postgres.schema import check_survived, qualified
from livepanel.backends.postgres.settings import PostgresSettings, TableNames
from livepanel.backends.queued import QueuedWriter
from livepanel.events import Event

__all__ = ["Writer", "WriterState", "append"]

logger = logging.getLogger("livepanel")

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


class Writer(QueuedWriter[PostgresSettings, str, int]):
    """Writes events and control messages to the stream, in the order they were handed over.

    Args:
        settings: the backend's settings.

    Example::

        writer = Writer(settings)
        writer.publish_nowait(event)  # held until start
        writer.begin(asyncio.get_running_loop())
        await writer.stop(timeout=5.0)  # writes what is queued first
    """

    _server = "PostgreSQL"
    _task_name = "livepanel-postgres-writer"
    _batch_size = 500  # rows per transaction
    _held_warning = (
        "livepanel: events wait in this process until its broadcaster starts; "
        "with several workers, start it at startup (await broadcaster.start())"
    )

    def __init__(self, settings: PostgresSettings) -> None:
        super().__init__(settings, finish)
        self._written_at: list[Any] = []  # when that row committed: how it is known again
        self._conn: AsyncConnection[Any] | None = None

    def begin(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start writing on ``loop`` (the running one), held events first."""
        self._conn = None  # a connection of a closed loop is of no use
        super().begin(loop)

    def forget(self) -> None:
        """Let go of a task and a connection whose loop has closed; events that waited
        without a caller wait for the next start."""
        with self._lock:
            self._held[:0] = [event for event, _, future in self._outbox if event and not future]
            self._outbox.clear()
            self._task = self._loop = self._loop_thread = self._conn = None
            self._enter(WriterState.STOPPED)

    async def publish(self, event: Event | None, body: str) -> Event | None:
        """Write one row (an event, or a control message when ``event`` is ``None``) and
        return the event with its id.

        Raises:
            BackendUnavailable: not started on this loop, or PostgreSQL did not take it in time.
        """
        return await self._submit(event, body)

    async def write_control(self, message: dict[str, Any]) -> None:
        """Append a control row (a revocation) behind what is queued.

        Raises:
            BackendUnavailable: PostgreSQL did not take it.
        """
        await self.publish(None, json.dumps(message, separators=(",", ":")))

    # ------------------------------------------------------------------ writing a batch

    def _body(self, event: Event) -> str:
        return encode_event(event)

    def _position(self, entry_id: str) -> int:
        return int(entry_id)

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        await close_quietly(conn)

    async def _append(self, batch: list[_Item]) -> tuple[str, list[str]]:
        settings = self.settings
        if self._conn is None or self._conn.closed:
            conn = await asyncio.wait_for(open_connection(settings), settings.timeout)
            written, self._conn = self.written, conn
            if written is not None and self._written_at:  # did a failover lose our rows?
                await check_survived(conn, settings.names, *written, self._written_at[0])
        rows = [(event is None, body) for event, body, _ in batch]
        epoch, positions = await asyncio.wait_for(
            append(self._conn, settings.names, rows, settings.timeout, self._written_at),
            settings.timeout * 2,
        )
        return epoch, [str(position) for position in positions]

    async def _failed(self, batch: list[_Item], exc: Exception) -> None:
        await self._release()  # a new connection after any failure
        reason = describe_error(exc)
        self._drop(batch, self._cannot_take(reason), reason)
