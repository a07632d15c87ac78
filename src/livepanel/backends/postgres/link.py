"""Connections to PostgreSQL for the backend's parts, and the small task helpers they share.

Each part (writer, reader, queries) holds one connection of its own, opened
here on the backend's loop, and opens a new one after a failure. Opening one
also makes sure the tables and the epoch record exist, so that a database
restored, replaced or emptied while the backend ran is found out at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from psycopg import AsyncConnection

from livepanel.backends.postgres.schema import create_tables, ensure_epoch, tables_exist
from livepanel.backends.postgres.settings import PostgresSettings
from livepanel.errors import ConfigurationError

__all__ = ["describe_error", "finish", "open_connection"]

logger = logging.getLogger("livepanel")


async def open_connection(
    settings: PostgresSettings, *, ensure: bool = True
) -> AsyncConnection[Any]:
    """A new autocommit connection, with the stream's tables and epoch record made sure of.

    Raises:
        psycopg.Error: PostgreSQL cannot be reached or refused the login.
        ConfigurationError: the tables are missing and this role may not create them.

    Example::

        conn = await open_connection(settings)
    """
    conn = await AsyncConnection.connect(
        settings.conninfo, autocommit=True, connect_timeout=max(1, round(settings.timeout))
    )
    if not ensure:
        return conn
    try:
        names = settings.names
        if not await tables_exist(conn, names):
            try:
                async with conn.transaction():
                    await create_tables(conn, names)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise ConfigurationError(
                    f"livepanel: the tables of stream {names.schema}.{names.events} are missing "
                    f"and this role may not create them ({exc.diag.message_primary}); create "
                    "them once with a role that may (see docs/postgres.md, 'Privileges')"
                ) from None
            logger.info("livepanel: created the tables of %s.%s", names.schema, names.events)
        await ensure_epoch(conn, names)
    except BaseException:
        await conn.close()
        raise
    return conn


def describe_error(exc: BaseException) -> str:
    """A failure in words that hold no password: the error's class and its first line.

    Example::

        >>> describe_error(TimeoutError("no answer"))
        'TimeoutError: no answer'
    """
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        first = exc.diag.message_primary
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


async def finish(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it; cancel again if a cancellation was swallowed.

    Example::

        await finish(reader_task)  # it is done when this returns
    """
    for _ in range(50):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if task.done() and not task.cancelled() and task.exception() is not None:
        logger.warning("livepanel: a PostgreSQL backend task ended with %r", task.exception())


async def close_quietly(conn: AsyncConnection[Any] | None) -> None:
    """Close ``conn`` (if any), ignoring a connection that is already broken."""
    if conn is not None:
        try:
            await asyncio.wait_for(conn.close(), 2.0)
        except Exception:  # a broken connection: nothing left to release
            pass
