"""What the Redis backend shares between workers beside the stream: claims and presence.

Keys live under the stream's name: a claim ``<key>`` at ``<stream>:<key>``
(``SET NX PX``), a worker's presence at ``<stream>:presence:<worker>`` (a
hash of counts by user that expires unless rewritten), and the turn to
announce presence at ``<stream>:presence-announce``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping

from redis.exceptions import RedisError

from livepanel.backends.redis.connect import describe_error
from livepanel.backends.redis.link import Link
from livepanel.backends.redis.settings import RedisSettings
from livepanel.errors import BackendUnavailable

__all__ = ["SharedRecords"]

_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class SharedRecords:
    """Single-use claims and worker presence, kept in Redis for every worker.

    Args:
        settings: the backend's settings.
        link: the backend's client.

    Example::

        records = SharedRecords(settings, link)
        await records.claim_once("ticket:n1", ttl=30.0)  # True once, across every worker
    """

    def __init__(self, settings: RedisSettings, link: Link) -> None:
        self.settings = settings
        self.link = link
        stream = settings.keys.stream
        self.presence_prefix = f"{stream}:presence:"
        self.announce_key = f"{stream}:presence-announce"

    async def claim_once(self, key: str, ttl: float) -> bool:
        """``SET <stream>:<key> 1 NX PX <ttl>``: ``True`` when nobody held it.

        Raises:
            BackendUnavailable: Redis could not say (its error's type only: keys are secrets).
        """
        client = self.link.require()
        milliseconds = max(1, math.ceil(ttl * 1000))
        try:
            stored = await client.set(
                f"{self.settings.keys.stream}:{key}", 1, nx=True, px=milliseconds
            )
        except _FAILURES as exc:
            raise BackendUnavailable(
                f"livepanel: Redis at {self.settings.location} cannot check a claim "
                f"({type(exc).__name__})"
            ) from None
        return bool(stored)

    async def write_presence(self, worker: str, counts: Mapping[str, int], expiry: float) -> None:
        """Replace ``worker``'s counts; they expire after ``expiry`` seconds."""
        client = self.link.require()
        key = f"{self.presence_prefix}{worker}"
        pipe = client.pipeline(transaction=True)
        pipe.delete(key)
        if counts:
            # a prefix keeps the anonymous user's "" a valid, non-empty field name
            pipe.hset(key, mapping={f"u{user}": count for user, count in counts.items()})
            pipe.pexpire(key, int(expiry * 1000))
        try:
            await pipe.execute()
        except _FAILURES as exc:
            raise self._unavailable(exc) from None

    async def read_presence(self) -> dict[str, int]:
        """Connections by user, summed over every worker whose key has not expired."""
        client = self.link.require()
        counts: dict[str, int] = {}
        try:
            keys = [k async for k in client.scan_iter(match=f"{self.presence_prefix}*", count=200)]
            if not keys:
                return counts
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            replies = await pipe.execute()
        except _FAILURES as exc:
            raise self._unavailable(exc) from None
        for entries in replies:
            for user, count in (entries or {}).items():
                name = user.decode() if isinstance(user, bytes) else str(user)
                counts[name[1:]] = counts.get(name[1:], 0) + int(count)
        return counts

    async def claim_announcement(self, worker: str, interval: float) -> bool:
        """``SET <stream>:presence-announce <worker> NX PX <interval>``."""
        client = self.link.require()
        try:
            taken = await client.set(self.announce_key, worker, nx=True, px=int(interval * 1000))
        except _FAILURES as exc:
            raise self._unavailable(exc) from None
        return bool(taken)

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"livepanel: Redis at {self.settings.location} cannot keep presence "
            f"({describe_error(exc)})"
        )
