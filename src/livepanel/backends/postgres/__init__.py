"""Scale-out on PostgreSQL: the stream in a table every worker reads, and events published
in the same transaction as the change they announce.

Each event is one row of the stream's table. Its **position** (the number in
its id, ``"<epoch>:<position>"``) is handed out in commit order, under one
transaction-level advisory lock held only while a transaction commits, so a
reader that reads "everything after the last position it saw" never skips or
repeats a row, whatever order concurrent transactions commit in; a replay
from any id reads the same rows in the same order. Every process listens on
the stream's ``NOTIFY`` channel and also polls every ``poll_interval`` seconds,
so a notification missed while it reconnected costs a moment, never an event.

An event written through the caller's own psycopg connection
(``await broadcaster.apublish(event, transaction=conn)``) is inserted in that
transaction and given its position by a deferred trigger when it commits:
delivered exactly once if it commits, never if it rolls back.

Parts, each a module of this package: ``settings`` (names and numbers),
``schema`` (the tables, the trigger, the epoch record), ``link`` (connections),
``codec`` (rows to events: the trust boundary), ``writer`` and ``reader`` (one
task each, with named states), ``queries`` (replays, the state at start,
retention), ``shared`` (single-use claims and worker presence) and
``transactional`` (publishing in the caller's transaction). See
``docs/postgres.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from psycopg import sql
from typing_extensions import override

from livepanel.backends.base import (
    Backend,
    Capability,
    Control,
    Deliver,
    ReaderReport,
    ReaderStatus,
    SingleUseClaims,
    TransactionalPublish,
    WorkerPresence,
)
from livepanel.backends.postgres.codec import MAX_ROW_SIZE, RejectedRow
from livepanel.backends.postgres.link import describe_error, finish
from livepanel.backends.postgres.queries import Queries, replay, seed, trim
from livepanel.backends.postgres.reader import Reader
from livepanel.backends.postgres.schema import privileges, qualified
from livepanel.backends.postgres.settings import (
    DEFAULT_SCHEMA,
    DEFAULT_TABLE,
    PostgresSettings,
    split_url,
)
from livepanel.backends.postgres.shared import SharedRecords
from livepanel.backends.postgres.transactional import write_in, write_in_async
from livepanel.backends.postgres.writer import Writer
from livepanel.errors import BackendUnavailable, ConfigurationError
from livepanel.events import Event
from livepanel.state import DEFAULT_STATE_LIMIT, StateSnapshot

__all__ = [
    "DEFAULT_SCHEMA",
    "DEFAULT_TABLE",
    "MAX_ROW_SIZE",
    "PostgresBackend",
    "RejectedRow",
]

logger = logging.getLogger("livepanel")

_URL_NUMBERS = ("poll_interval", "max_age", "reconnect_delay")


class PostgresBackend(Backend):
    """Events in a PostgreSQL table shared by every worker process and host.

    Args:
        conninfo: a ``postgresql://`` URL or a libpq connection string; libpq's
            own options (``sslmode``, ``target_session_attrs``, several hosts
            for a failover) work as usual.
        schema: the schema of livepanel's tables (created when missing, when
            the role may).
        table: the stream's table; the others are named after it
            (``<table>_meta``, ``_state``, ``_claims``, ``_presence``).
        history: how many recent events the table keeps for ``since``.
        max_age: seconds after which an event is trimmed even within ``history``
            (``None``: by count only).
        timeout: seconds for connecting and for each query; also bounds how
            long :meth:`publish` waits for a confirmation and how long a
            publish waits for the stream lock.
        poll_interval: seconds between two reads when no notification comes.
        max_pending: events that may wait for PostgreSQL in this process.
        reconnect_delay: the first pause after a failure, doubling with jitter.
        reconnect_max_delay: the longest pause between two attempts.
        state_limit: most entries one keyed state collection holds.

    Raises:
        ConfigurationError: an impossible setting.

    Example::

        Broadcaster("postgresql://app@db:5432/app")  # or LIVEPANEL_BACKEND_URL=postgresql://...
        Broadcaster(PostgresBackend("postgresql://app@db/app", table="panel_events",
                                    history=5000, max_age=3600))
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.SINGLE_USE_CLAIMS,
            Capability.WORKER_PRESENCE,
            Capability.READER_STATUS,
            Capability.TRANSACTIONAL_PUBLISH,
        }
    )
    claims_shared: ClassVar[bool] = True

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        table: str = DEFAULT_TABLE,
        history: int = 1000,
        max_age: float | None = None,
        timeout: float = 5.0,
        poll_interval: float = 1.0,
        max_pending: int = 10000,
        reconnect_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        state_limit: int = DEFAULT_STATE_LIMIT,
    ) -> None:
        self.settings = PostgresSettings.check(
            conninfo,
            schema=schema,
            table=table,
            history=history,
            max_age=max_age,
            timeout=timeout,
            poll_interval=poll_interval,
            max_pending=max_pending,
            reconnect_delay=reconnect_delay,
            reconnect_max_delay=reconnect_max_delay,
            state_limit=state_limit,
        )
        """Every setting, checked."""
        self.names = self.settings.names
        """The names of the tables, sequence, channel and locks."""
        self._queries = Queries(self.settings)
        self._writer = Writer(self.settings)
        self._reader = Reader(self.settings, self._queries)
        self._shared = SharedRecords(self._queries)
        self._retention: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, *, history: int = 1000, **options: Any) -> PostgresBackend:
        """Build a backend from a URL; ``schema``, ``table``, ``poll_interval``, ``max_age``
        and ``reconnect_delay`` in the query set those arguments, the rest goes to libpq.

        Example: ``postgresql://app:secret@db:5432/app?table=panel_events&max_age=3600``.

        Raises:
            ConfigurationError: a malformed setting in the URL.
        """
        conninfo, own = split_url(url)
        for name in ("schema", "table"):
            if name in own:
                options.setdefault(name, own[name])
        for name in _URL_NUMBERS:
            if name in own:
                try:
                    options.setdefault(name, float(own[name]))
                except ValueError:
                    raise ConfigurationError(
                        f"PostgresBackend: {name}={own[name]!r} in the URL is not a number"
                    ) from None
        return cls(conninfo, history=history, **options)

    @property
    def epoch(self) -> str | None:
        """The epoch this process's reader delivers in (``None`` before start)."""
        return self._reader.epoch

    # ------------------------------------------------------------------ lifecycle

    @override
    async def start(self, deliver: Deliver, control: Control | None = None) -> str:
        """Connect, create the tables when missing, read the state and the head in one
        snapshot, start the writer, the reader and retention.

        Returns:
            The id of the newest row, or ``"<epoch>:<base>"`` while the epoch has none.

        Raises:
            BackendUnavailable: PostgreSQL cannot be reached.
            ConfigurationError: the tables are missing and this role may not create them.
        """
        loop = asyncio.get_running_loop()
        reader, writer = self._reader, self._writer
        if reader.running and writer.loop is loop:
            return reader.head_id
        if writer.loop is loop:
            await self.stop()
        else:  # a first start, or the loop it ran on closed: its tasks and connections with it
            reader.forget()
            writer.forget()
            self._retention = None
        try:
            listening = await reader.listen()  # listen first: nothing after the seed is missed
            try:
                seeded = await self._queries.run(lambda c: seed(c, self.names, reader.fold))
            except BaseException:
                await listening.close()
                raise
        except ConfigurationError:
            raise
        except Exception as exc:
            raise BackendUnavailable(
                f"livepanel: cannot reach PostgreSQL at {self.settings.location} "
                f"({describe_error(exc)}); check LIVEPANEL_BACKEND_URL and that it is running"
            ) from None
        writer.begin(loop)
        reader.begin(loop, deliver, control, seeded, listening)
        self._retention = loop.create_task(self._retain(), name="livepanel-postgres-retention")
        logger.info(
            "livepanel: PostgreSQL stream %s.%s at %s, epoch %s, from position %d",
            self.names.schema,
            self.names.events,
            self.settings.location,
            seeded.epoch,
            seeded.head,
        )
        return reader.head_id

    @override
    async def stop(self) -> None:
        """Write what is queued (waiting at most ``timeout``), stop every task, disconnect."""
        if self._retention is not None:
            await finish(self._retention)
            self._retention = None
        if self._reader.running or self._reader.epoch is not None:
            await self._reader.stop()
        await self._writer.stop(self.settings.timeout)
        await self._queries.close()

    async def _retain(self) -> None:
        """Retention rounds, each after the one before ended, while the backend runs."""
        interval = max(1.0, self.settings.poll_interval)
        while True:
            try:
                removed = await self._queries.run(lambda conn: trim(conn, self.settings))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("livepanel: retention round failed (%s)", describe_error(exc))
                removed = 0
            if not removed:  # rows were left behind only when a round hit its batch size
                await asyncio.sleep(interval)

    # ------------------------------------------------------------------ the contract

    @override
    def publish_nowait(self, event: Event) -> Event:
        """Queue ``event`` for PostgreSQL from any thread; never blocks, never raises.

        The returned event has no id yet: it is given when the row commits.
        """
        self._writer.publish_nowait(event)
        return event

    @override
    async def publish(self, event: Event) -> Event:
        """Write ``event`` to the stream and return it with its id.

        Raises:
            BackendUnavailable: PostgreSQL did not take it within ``timeout``.
        """
        from livepanel.backends.postgres.codec import encode_event

        stored = await self._writer.publish(event, encode_event(event))
        assert stored is not None
        return stored

    @override
    async def send_control(self, message: dict[str, Any]) -> None:
        """Append a control row: every worker's reader acts on it, in stream order.

        Raises:
            BackendUnavailable: PostgreSQL did not take it.
        """
        await self._writer.write_control(message)

    @override
    async def replay(self, since: str) -> list[Event] | None:
        """Every retained event after ``since``, read in one snapshot; ``None`` when ``since``
        is from another epoch, no longer in the table, or PostgreSQL cannot answer now."""
        if self._writer.loop is None:
            return None
        try:
            return await self._queries.run(lambda conn: replay(conn, self.names, since))
        except Exception as exc:
            logger.warning(
                "livepanel: cannot replay from PostgreSQL at %s (%s); clients resuming now "
                "get resume_unavailable",
                self.settings.location,
                describe_error(exc),
            )
            return None

    @override
    async def state(self) -> StateSnapshot:
        """The state at this process's reader position (seeded from the database at start).

        Raises:
            BackendUnavailable: the backend is not started.
        """
        if self._reader.epoch is None or self._writer.loop is None:
            raise BackendUnavailable("livepanel: the PostgreSQL backend is not started")
        await self._reader.caught_up(self._writer.written, self.settings.timeout)
        return self._reader.snapshot()

    @override
    def stats(self) -> dict[str, Any]:
        """``publish_failures``, ``publish_pending``, ``reader_reconnects``,
        ``rejected_entries`` (rows skipped: not valid events) and ``state_evicted``."""
        reader = self._reader
        return {
            "publish_failures": self._writer.publish_failures,
            "publish_pending": self._writer.pending,
            "reader_reconnects": reader.reconnects,
            "rejected_entries": reader.rejected_rows,
            "state_evicted": reader.fold.evicted,
        }

    @override
    def describe(self) -> str:
        """The URL, password hidden."""
        return self.settings.location

    def grants(self, role: str) -> list[str]:
        """The ``GRANT`` statements that let ``role`` run livepanel on tables created
        beforehand, and nothing more (see ``docs/postgres.md``, "Privileges").

        Example::

            for statement in backend.grants("panel"):
                print(statement + ";")
        """
        return privileges(self.names, role)

    def table(self) -> sql.Identifier:
        """The stream's table, quoted, for queries of your own (``sql.SQL("... {}")``)."""
        return qualified(self.names, self.names.events)

    # ------------------------------------------------------------------ capabilities

    async def reader_status(self, timeout: float = 2.0) -> ReaderReport:
        """Where this process's reader stands (:class:`~livepanel.backends.base.ReaderReport`):
        rows committed that it has not read, and publishers waiting for the stream lock
        while a commit holds it (reported as lag, so health says ``stalled`` past the
        threshold instead of hanging)."""
        return await self._reader.status(timeout)

    async def claim_once(self, key: str, ttl: float) -> bool:
        """Claim ``key`` for ``ttl`` seconds across every worker (one row, ``ON CONFLICT``).

        Raises:
            BackendUnavailable: PostgreSQL could not say whether ``key`` was claimed.
        """
        return await self._shared.claim_once(key, ttl)

    async def write_presence(self, worker: str, counts: Mapping[str, int], expiry: float) -> None:
        """Replace ``worker``'s connection counts; they expire after ``expiry`` s."""
        await self._shared.write_presence(worker, counts, expiry)

    async def read_presence(self) -> dict[str, int]:
        """Connections by user, summed over every worker whose counts have not expired."""
        return await self._shared.read_presence()

    async def claim_announcement(self, worker: str, interval: float) -> bool:
        """Take the turn to announce presence for ``interval`` seconds, across every worker."""
        return await self._shared.claim_announcement(worker, interval)

    def publish_in(self, transaction: Any, event: Event) -> Event:
        """Write ``event`` in the open transaction of ``transaction``, a psycopg
        ``Connection`` (:class:`~livepanel.backends.base.TransactionalPublish`).

        Raises:
            ConfigurationError: not a psycopg ``Connection`` with a transaction open.
        """
        return write_in(transaction, self.names, event)

    async def apublish_in(self, transaction: Any, event: Event) -> Event:
        """Write ``event`` in the open transaction of ``transaction``, a psycopg
        ``AsyncConnection`` (:class:`~livepanel.backends.base.TransactionalPublish`).

        Raises:
            ConfigurationError: not a psycopg ``AsyncConnection`` with a transaction open.
        """
        return await write_in_async(transaction, self.names, event)

    def __repr__(self) -> str:
        return f"PostgresBackend({self.settings.location!r}, table={self.names.events!r})"


if TYPE_CHECKING:  # mypy holds the declared capabilities to their protocols
    _CLAIMS: type[SingleUseClaims] = PostgresBackend
    _PRESENCE: type[WorkerPresence] = PostgresBackend
    _READER: type[ReaderStatus] = PostgresBackend
    _TRANSACTIONAL: type[TransactionalPublish] = PostgresBackend
