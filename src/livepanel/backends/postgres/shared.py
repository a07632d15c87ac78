"""Records every worker shares beside the stream: single-use claims and worker presence.

A claim is a row that holds until it expires: an ``INSERT ... ON CONFLICT``
takes it when it is new or expired, atomically, whatever number of workers
race. Presence is one row per worker with its counts and an expiry; the
announcer's turn is a claim.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from psycopg import AsyncConnection, sql

from livepanel.backends.postgres.link import describe_error
from livepanel.backends.postgres.queries import Queries
from livepanel.backends.postgres.schema import qualified
from livepanel.errors import BackendUnavailable

__all__ = ["SharedRecords"]


class SharedRecords:
    """Claims and presence in two small tables beside the stream.

    Args:
        queries: the backend's connection for occasional queries.

    Example::

        records = SharedRecords(queries)
        await records.claim_once("ticket:n1", 30.0)  # True, then False for 30 s
    """

    def __init__(self, queries: Queries) -> None:
        self.queries = queries
        names = queries.settings.names
        self._claims = qualified(names, names.claims)
        self._presence = qualified(names, names.presence)

    async def claim_once(self, key: str, ttl: float) -> bool:
        """``True`` the first time ``key`` is claimed, ``False`` until ``ttl`` seconds passed.

        Raises:
            BackendUnavailable: PostgreSQL could not say.
        """
        row = await self._one(
            sql.SQL(
                "INSERT INTO {t} (key, expires) VALUES (%s, clock_timestamp() + "
                "make_interval(secs => %s)) ON CONFLICT (key) DO UPDATE SET expires = "
                "EXCLUDED.expires WHERE {t}.expires <= clock_timestamp() RETURNING 1"
            ).format(t=self._claims),
            (key, ttl),
        )
        return row is not None

    async def write_presence(self, worker: str, counts: Mapping[str, int], expiry: float) -> None:
        """Replace ``worker``'s counts; they stop counting after ``expiry`` seconds.

        Raises:
            BackendUnavailable: PostgreSQL did not take them.
        """
        if not counts:
            await self._one(
                sql.SQL("DELETE FROM {} WHERE worker = %s RETURNING 1").format(self._presence),
                (worker,),
            )
            return
        await self._one(
            sql.SQL(
                "INSERT INTO {t} (worker, counts, expires) VALUES (%s, %s::jsonb, "
                "clock_timestamp() + make_interval(secs => %s)) ON CONFLICT (worker) DO UPDATE "
                "SET counts = EXCLUDED.counts, expires = EXCLUDED.expires RETURNING 1"
            ).format(t=self._presence),
            (worker, json.dumps(dict(counts)), expiry),
        )

    async def read_presence(self) -> dict[str, int]:
        """Connections by user, summed over every worker whose counts have not expired.

        Raises:
            BackendUnavailable: PostgreSQL did not answer.
        """
        rows = await self._all(
            sql.SQL(
                "SELECT c.key, sum(c.value::bigint) FROM {} p, jsonb_each_text(p.counts) c "
                "WHERE p.expires > clock_timestamp() GROUP BY c.key"
            ).format(self._presence),
            (),
        )
        return {str(user): int(total) for user, total in rows if int(total) > 0}

    async def claim_announcement(self, worker: str, interval: float) -> bool:
        """Take the turn to announce presence for ``interval`` seconds, across every worker.

        Raises:
            BackendUnavailable: PostgreSQL could not say.
        """
        return await self.claim_once("!presence:announce", interval)

    async def _one(self, query: sql.Composed, params: tuple[object, ...]) -> tuple[Any, ...] | None:
        rows = await self._all(query, params)
        return rows[0] if rows else None

    async def _all(self, query: sql.Composed, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        try:

            async def job(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
                cursor = await conn.execute(query, params)
                return [tuple(row) for row in await cursor.fetchall()]

            return await self.queries.run(job)
        except Exception as exc:
            raise BackendUnavailable(
                f"livepanel: PostgreSQL at {self.queries.settings.location} did not answer "
                f"({describe_error(exc)})"
            ) from None
