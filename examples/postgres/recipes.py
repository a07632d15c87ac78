"""Publishing in the same transaction as the change it announces: psycopg and SQLAlchemy.

The event is written in the caller's transaction: delivered exactly once if it commits,
never if it rolls back, and never lost to a crash between the commit and a publish.
"""

from __future__ import annotations

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from livepanel import Broadcaster
from livepanel.events import SessionCreated, SessionKilled


async def kill_session(broadcaster: Broadcaster, conn: psycopg.AsyncConnection, key: str) -> None:
    """psycopg 3: the UPDATE and the event commit together."""
    async with conn.transaction():
        await conn.execute("UPDATE sessions SET killed = true WHERE key = %s", (key,))
        await broadcaster.apublish(SessionKilled(session_key=key, agent_id="a1"), transaction=conn)


async def create_session(broadcaster: Broadcaster, session: AsyncSession, key: str) -> None:
    """SQLAlchemy (async, the postgresql+psycopg dialect): the same, through the session's
    own connection."""
    async with session.begin():
        await session.execute(text("INSERT INTO sessions (key) VALUES (:key)"), {"key": key})
        connection = await session.connection()
        raw = await connection.get_raw_connection()  # SQLAlchemy's pool wrapper
        await broadcaster.apublish(
            SessionCreated(session_key=key, agent_id="a1", kind="direct"),
            transaction=raw.driver_connection,  # psycopg's AsyncConnection
        )
