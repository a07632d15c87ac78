"""What the Redis backend shares between workers beside the stream: claims, presence, acks.

Keys live under the stream's name: a claim ``<key>`` at ``<stream>:<key>``
(``SET NX PX``), a worker's presence at ``<stream>:presence:<worker>`` (a
hash of counts by user that expires unless rewritten), the turn to
announce presence at ``<stream>:presence-announce``, and every worker's ack
summary in one hash, ``<stream>:receipts`` (a field per worker: its rows and
when they stop counting).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Mapping

from redis.exceptions import RedisError

from livepanel.backends.base import AckSummary
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
        self.receipts_key = f"{stream}:receipts"

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

    async def write_receipts(self, worker: str, acks: AckSummary, expiry: float) -> None:
        """``HSET <stream>:receipts <worker> {"until", "acks"}`` (``HDEL`` when empty)."""
        client = self.link.require()
        try:
            if acks:
                until = time.time() + expiry  # wall clock: compared by every worker
                row = json.dumps({"until": until, "acks": [list(a) for a in acks]})
                pipe = client.pipeline(transaction=False)
                pipe.hset(self.receipts_key, worker, row)
                pipe.pexpire(self.receipts_key, int(expiry * 1000))
                await pipe.execute()
            else:
                await client.hdel(self.receipts_key, worker)
        except _FAILURES as exc:
            raise self._unavailable(exc, "share acks") from None

    async def read_receipts(self) -> dict[str, AckSummary]:
        """Every worker's summary that has not expired (``HGETALL``); expired ones are dropped."""
        client = self.link.require()
        try:
            rows = await client.hgetall(self.receipts_key)
        except _FAILURES as exc:
            raise self._unavailable(exc, "read acks") from None
        now = time.time()
        summaries: dict[str, AckSummary] = {}
        expired: list[bytes | str] = []
        for field, value in (rows or {}).items():
            worker = field.decode() if isinstance(field, bytes) else str(field)
            try:
                row = json.loads(value)
                if float(row["until"]) <= now:
                    expired.append(field)  # a worker that died: its row goes
                    continue
                summaries[worker] = [(str(u), str(i), int(n)) for u, i, n in row["acks"]]
            except (ValueError, TypeError, KeyError):  # not a summary livepanel wrote
                continue
        if expired:
            with contextlib.suppress(*_FAILURES):  # dropped next time if not now
                await client.hdel(self.receipts_key, *expired)
        return summaries

    def _unavailable(self, exc: BaseException, what: str = "keep presence") -> BackendUnavailable:
        return BackendUnavailable(
            f"livepanel: Redis at {self.settings.location} cannot {what} ({describe_error(exc)})"
        )
