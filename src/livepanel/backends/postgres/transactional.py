"""Publishing in the caller's transaction: the event commits, or rolls back, with the change.

The row is inserted through the caller's own psycopg connection, without a
position; a deferred constraint trigger gives it one when the transaction
commits, under the stream lock (see :mod:`livepanel.backends.postgres.schema`),
and its ``NOTIFY`` wakes every reader once the commit is visible. Rolled back,
the row never existed: no reader sees it, no position is spent.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, Connection, sql
from psycopg.pq import TransactionStatus

from livepanel.backends.postgres.codec import encode_event
from livepanel.backends.postgres.schema import qualified
from livepanel.backends.postgres.settings import TableNames
from livepanel.errors import ConfigurationError
from livepanel.events import Event

__all__ = ["insert_statement", "write_in", "write_in_async"]

_USABLE = (TransactionStatus.IDLE, TransactionStatus.INTRANS)


def insert_statement(names: TableNames) -> sql.Composed:
    """The ``INSERT`` of an event without a position (the trigger gives it one at commit).

    Example::

        >>> insert_statement(TableNames.of("app", "ev")).as_string()
        'INSERT INTO "app"."ev" (body) VALUES (%s)'
    """
    return sql.SQL("INSERT INTO {} (body) VALUES (%s)").format(qualified(names, names.events))


def _check(transaction: Any, kind: type[Any], call: str, instead: str) -> None:
    if not isinstance(transaction, kind):
        raise ConfigurationError(
            f"livepanel: {call}(..., transaction=) takes a psycopg {kind.__name__} with a "
            f"transaction open, not {type(transaction).__name__} ({instead})"
        )
    status = transaction.info.transaction_status
    if transaction.autocommit and status is not TransactionStatus.INTRANS:
        raise ConfigurationError(
            f"livepanel: {call}(..., transaction=) needs a transaction open on the connection "
            "(it is in autocommit mode); open one with `with conn.transaction():` first"
        )
    if status not in _USABLE:
        raise ConfigurationError(
            f"livepanel: {call}(..., transaction=) cannot write on this connection (its "
            f"transaction is {status.name.lower()}); roll it back and try again"
        )


def write_in(transaction: Connection[Any], names: TableNames, event: Event) -> Event:
    """Write ``event`` through the sync connection ``transaction``, in its open transaction.

    Raises:
        ConfigurationError: not a psycopg ``Connection``, or no transaction can hold it.
        psycopg.Error: the insert failed (the caller's transaction is then aborted).

    Example::

        with conn.transaction():
            conn.execute("UPDATE sessions SET state = 'killed' WHERE key = %s", (key,))
            write_in(conn, names, event)  # delivered once the block commits
    """
    _check(transaction, Connection, "publish", "an AsyncConnection goes to apublish")
    transaction.execute(insert_statement(names), (encode_event(event),))
    return event


async def write_in_async(
    transaction: AsyncConnection[Any], names: TableNames, event: Event
) -> Event:
    """Write ``event`` through the async connection ``transaction``, in its open transaction.

    Raises:
        ConfigurationError: not a psycopg ``AsyncConnection``, or no transaction can hold it.
        psycopg.Error: the insert failed (the caller's transaction is then aborted).

    Example::

        async with conn.transaction():
            await write_in_async(conn, names, event)  # delivered once the block commits
    """
    _check(transaction, AsyncConnection, "apublish", "a sync Connection goes to publish")
    await transaction.execute(insert_statement(names), (encode_event(event),))
    return event
