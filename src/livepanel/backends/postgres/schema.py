"""The tables livepanel keeps in PostgreSQL, created when missing, and the epoch record.

The stream is one table. A row gets its **position** (the number in its id)
in commit order: positions are handed out only under one transaction-level
advisory lock (:attr:`TableNames.stream_lock`), which its holder keeps until
its commit is visible to everyone. So when a reader sees position ``n``
committed, every position below ``n`` has been committed or rolled back
already: reading "everything after the last position seen" never skips a
row, whatever order the transactions ran in. Rolled-back positions are gaps,
never events.

* The backend's own writer takes the lock, inserts a batch with its
  positions and commits: one short transaction.
* An event written in the caller's transaction (transactional publish) is
  inserted without a position; a deferred constraint trigger gives it one at
  commit time, under the same lock, so that a long transaction holds the lock
  only for its commit, never for its whole life.

Both send a ``NOTIFY`` on the stream's channel, which PostgreSQL delivers
only once the transaction commits. See ``docs/postgres.md``.
"""

from __future__ import annotations

import secrets
from typing import Any

from psycopg import AsyncConnection, sql

from livepanel.backends.postgres.settings import TableNames

__all__ = [
    "Epoch",
    "check_survived",
    "create_tables",
    "ensure_epoch",
    "privileges",
    "qualified",
    "read_epoch",
    "retire_epoch",
    "tables_exist",
]

Epoch = tuple[str, int, int, int]
"""The epoch record: ``(epoch, base, trimmed, state_through)``."""


def qualified(names: TableNames, name: str) -> sql.Identifier:
    """``"schema"."name"``, quoted.

    Example::

        >>> qualified(TableNames.of("app", "ev"), "ev").as_string()
        '"app"."ev"'
    """
    return sql.Identifier(names.schema, name)


def _ddl(names: TableNames) -> list[sql.Composed]:
    """The statements that create everything for one stream."""

    def q(name: str) -> sql.Identifier:
        return qualified(names, name)

    key = sql.Literal(names.stream_lock)
    channel = sql.Literal(names.channel)
    function_body = sql.SQL(
        """
        BEGIN
            PERFORM pg_advisory_xact_lock({key});
            UPDATE {events} SET position = nextval({sequence}), committed_at = clock_timestamp()
                WHERE id = NEW.id;
            PERFORM pg_notify({channel}, '');
            RETURN NULL;
        END
        """
    ).format(
        key=key,
        events=q(names.events),
        sequence=sql.Literal(f"{names.schema}.{names.sequence}"),
        channel=channel,
    )
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(names.schema)),
        sql.SQL("CREATE SEQUENCE {} AS bigint").format(q(names.sequence)),
        sql.SQL(
            """
            CREATE TABLE {} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                position bigint UNIQUE,
                committed_at timestamptz,
                control boolean NOT NULL DEFAULT false,
                body text NOT NULL
            )
            """
        ).format(q(names.events)),
        sql.SQL(
            """
            CREATE TABLE {} (
                singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                epoch text NOT NULL,
                base bigint NOT NULL,
                trimmed bigint NOT NULL,
                state_through bigint NOT NULL
            )
            """
        ).format(q(names.meta)),
        sql.SQL("CREATE TABLE {} (position bigint PRIMARY KEY, body text NOT NULL)").format(
            q(names.state)
        ),
        sql.SQL("CREATE TABLE {} (key text PRIMARY KEY, expires timestamptz NOT NULL)").format(
            q(names.claims)
        ),
        sql.SQL(
            "CREATE TABLE {} (worker text PRIMARY KEY, counts jsonb NOT NULL, "
            "expires timestamptz NOT NULL)"
        ).format(q(names.presence)),
        sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
            q(names.function), sql.Literal(function_body.as_string())
        ),
        sql.SQL(
            """
            CREATE CONSTRAINT TRIGGER {trigger} AFTER INSERT ON {events}
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.position IS NULL)
                EXECUTE FUNCTION {function}()
            """
        ).format(
            trigger=sql.Identifier(names.function),
            events=q(names.events),
            function=q(names.function),
        ),
    ]


async def tables_exist(conn: AsyncConnection[Any], names: TableNames) -> bool:
    """Whether the stream's tables are there (all are created in one transaction).

    Example::

        if not await tables_exist(conn, settings.names):
            await create_tables(conn, settings.names)
    """
    cursor = await conn.execute(  # pg_class read in this statement's snapshot, not a cache
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s)",
        (names.schema, names.meta),
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def create_tables(conn: AsyncConnection[Any], names: TableNames) -> None:
    """Create the stream's tables, sequence and trigger when missing, in one transaction that
    concurrent workers take turns at (the connection must not be in autocommit).

    Example::

        async with conn.transaction():
            await create_tables(conn, names)
    """
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (names.stream_lock,))
    if await tables_exist(conn, names):
        return  # another worker created them while we waited
    for statement in _ddl(names):
        await conn.execute(statement)


async def ensure_epoch(conn: AsyncConnection[Any], names: TableNames) -> Epoch:
    """The epoch record, begun now when there is none (a new or emptied stream).

    A new epoch starts after the newest row the table still holds, under the
    stream lock, so that no position is handed out meanwhile.

    Example::

        epoch, base, trimmed, state_through = await ensure_epoch(conn, names)
    """
    record = await read_epoch(conn, names)
    if record is not None:
        return record
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (names.stream_lock,))
        await conn.execute(
            sql.SQL(
                "INSERT INTO {meta} (epoch, base, trimmed, state_through) "
                "SELECT %s, m, m, m FROM (SELECT coalesce(max(position), 0) AS m FROM {events}) h "
                "ON CONFLICT (singleton) DO NOTHING"
            ).format(meta=qualified(names, names.meta), events=qualified(names, names.events)),
            (secrets.token_hex(6),),
        )
        await conn.execute(sql.SQL("DELETE FROM {}").format(qualified(names, names.state)))
    record = await read_epoch(conn, names)
    assert record is not None
    return record


async def read_epoch(conn: AsyncConnection[Any], names: TableNames) -> Epoch | None:
    """The epoch record as it is now, or ``None`` when there is none.

    Example::

        record = await read_epoch(conn, names)  # ("3f9c1a2b4d5e", 0, 0, 0)
    """
    cursor = await conn.execute(
        sql.SQL("SELECT epoch, base, trimmed, state_through FROM {}").format(
            qualified(names, names.meta)
        )
    )
    row = await cursor.fetchone()
    return None if row is None else (str(row[0]), int(row[1]), int(row[2]), int(row[3]))


async def retire_epoch(
    conn: AsyncConnection[Any], names: TableNames, old: str, floor: int
) -> Epoch | None:
    """Begin a new epoch after position ``floor`` unless the record moved past ``old`` already;
    the stored state starts over empty (the connection must not be in autocommit).

    Example::

        await retire_epoch(conn, names, old=reader.epoch, floor=newest_surviving_position)
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (names.stream_lock,))
        await conn.execute(
            sql.SQL(
                "UPDATE {} SET epoch = %s, base = %s, state_through = %s WHERE epoch = %s"
            ).format(qualified(names, names.meta)),
            (secrets.token_hex(6), floor, floor, old),
        )
        await conn.execute(sql.SQL("DELETE FROM {}").format(qualified(names, names.state)))
    return await read_epoch(conn, names)


async def check_survived(
    conn: AsyncConnection[Any], names: TableNames, epoch: str, position: int, at: Any
) -> Epoch | None:
    """When the row at ``position`` of ``epoch``, committed at ``at``, is gone though neither
    trimmed nor before the epoch (a failover lost it), begin a new epoch after the newest
    row committed before it and return its record; else ``None``.

    Example::

        if await check_survived(conn, names, epoch, last, last_at) is not None:
            ...  # positions may be issued again: the stream moved to a new epoch
    """
    record = await read_epoch(conn, names)
    if record is None or record[0] != epoch or position <= max(record[1], record[2]):
        return None
    events = qualified(names, names.events)
    cursor = await conn.execute(
        sql.SQL("SELECT committed_at FROM {} WHERE position = %s").format(events), (position,)
    )
    row = await cursor.fetchone()
    if row is not None and row[0] == at:
        return None
    cursor = await conn.execute(
        sql.SQL(
            "SELECT coalesce(max(position), %s) FROM {} WHERE position < %s AND committed_at <= %s"
        ).format(events),
        (record[1], position, at),
    )
    floor = await cursor.fetchone()
    return await retire_epoch(conn, names, epoch, int(floor[0]) if floor else record[1])


def privileges(names: TableNames, role: str) -> list[str]:
    """The ``GRANT`` statements a role needs to run livepanel on tables created beforehand:
    nothing more (no ``CREATE``, no ownership).

    Example::

        >>> privileges(TableNames.of("app", "ev"), "panel")[0]
        'GRANT USAGE ON SCHEMA "app" TO "panel"'
    """
    schema, who = f'"{names.schema}"', f'"{role}"'
    tables = ", ".join(
        f'{schema}."{name}"'
        for name in (names.events, names.meta, names.state, names.claims, names.presence)
    )
    return [
        f"GRANT USAGE ON SCHEMA {schema} TO {who}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {who}",
        f'GRANT USAGE ON SEQUENCE {schema}."{names.sequence}" TO {who}',
    ]
