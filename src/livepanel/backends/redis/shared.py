"""What the Redis backend shares between workers beside the stream: claims, presence, acks,
leases.

Keys live under the stream's name: a claim ``<key>`` at ``<stream>:<key>``
(``SET NX PX``), a worker's presence at ``<stream>:presence:<worker>`` (a
hash of counts by user that expires unless rewritten), the turn to
announce presence at ``<stream>:presence-announce``, and every worker's ack
summary in one hash, ``<stream>:receipts`` (a field per worker: its rows and
when they stop counting). A lease ``<name>`` is ``<stream>:lease:<name>``
(its holder, expiring with ``PX``) and its fencing token counter
``<stream>:lease:<name>:token``, changed together by one script so no two
holders ever hold it at once; Redis's clock decides the expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Mapping

from redis.exceptions import RedisError

from livepanel.backends.base import AckSummary
from livepanel.backends.redis.codec import FIELD, entry_list, text
from livepanel.backends.redis.connect import describe_error
from livepanel.backends.redis.link import Link
from livepanel.backends.redis.settings import RedisSettings
from livepanel.errors import BackendUnavailable
from livepanel.events import registered_types

__all__ = ["SharedCapabilities", "SharedRecords"]

logger = logging.getLogger("livepanel")

_FAILURES = (RedisError, OSError, asyncio.TimeoutError)

# KEYS: the lease, its token counter; ARGV: holder, ttl in ms. Renew if ours, take if free.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if current then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return token
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


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
        self._checked_types = False

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

    async def unknown_types(self, count: int = 50) -> tuple[int, int]:
        """Of the stream's newest ``count`` events, how many have a type this process does
        not register, and how many were looked at: another application's, when the
        stream is shared by mistake. Entries that are not JSON events are not counted.

        Raises:
            BackendUnavailable: Redis could not say.
        """
        client = self.link.require()
        try:
            entries = await client.xrevrange(self.settings.keys.stream, count=count)
        except _FAILURES as exc:
            raise self._unavailable(exc, "read the stream") from None
        known = registered_types()
        unknown = examined = 0
        for _, fields in entry_list(entries):
            if not isinstance(fields, dict):
                continue
            raw = fields.get(FIELD.encode()) or fields.get(FIELD)
            try:
                kind = json.loads(text(raw)).get("type") if raw is not None else None
            except (ValueError, AttributeError):
                continue
            if isinstance(kind, str):
                examined += 1
                unknown += kind not in known
        return unknown, examined

    async def warn_of_unknown_types(self) -> None:
        """Once per backend: say so when the stream's newest events are of types this
        process does not register (another application's, on the default stream name)."""
        if self._checked_types:
            return
        self._checked_types = True
        try:
            unknown, examined = await self.unknown_types()
        except BackendUnavailable:
            return  # the reader says so soon enough
        if unknown:
            # the types' names are whoever wrote them's choice: counted, not quoted
            logger.warning(
                "livepanel: %d of the newest %d events in the Redis stream %s are of types this "
                "process does not register: is another application using the same stream? "
                'Give each application its own: RedisBackend(url, stream="<app>:events"); or '
                "import the modules declaring those types in every worker",
                unknown,
                examined,
                self.settings.keys.stream,
            )

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew ``<stream>:lease:<name>`` for ``holder``: its fencing token, or
        ``None`` while another holder has it.

        Raises:
            BackendUnavailable: Redis could not say.
        """
        client = self.link.require()
        key = f"{self.settings.keys.stream}:lease:{name}"
        milliseconds = max(1, math.ceil(ttl * 1000))
        try:
            token = await client.eval(_ACQUIRE, 2, key, f"{key}:token", holder, milliseconds)
        except _FAILURES as exc:
            raise self._unavailable(exc, "keep a lease") from None
        return None if token is None else int(token)

    async def release_lease(self, name: str, holder: str) -> None:
        """Delete ``<stream>:lease:<name>`` if ``holder`` has it."""
        client = self.link.require()
        key = f"{self.settings.keys.stream}:lease:{name}"
        try:
            await client.eval(_RELEASE, 1, key, holder)
        except _FAILURES as exc:
            raise self._unavailable(exc, "release a lease") from None

    def _unavailable(self, exc: BaseException, what: str = "keep presence") -> BackendUnavailable:
        return BackendUnavailable(
            f"livepanel: Redis at {self.settings.location} cannot {what} ({describe_error(exc)})"
        )


class SharedCapabilities:
    """The capabilities the Redis backend keeps in shared keys beside the stream: single-use
    claims, worker presence, ack summaries and leases, each one call to its
    :class:`SharedRecords`.

    Example::

        class RedisBackend(SharedCapabilities, Backend): ...
    """

    _shared: SharedRecords

    async def claim_once(self, key: str, ttl: float) -> bool:
        """Claim ``key`` for ``ttl`` seconds across every worker (``SET NX``).

        Raises:
            BackendUnavailable: Redis could not say whether ``key`` was claimed.
        """
        return await self._shared.claim_once(key, ttl)

    async def write_presence(self, worker: str, counts: Mapping[str, int], expiry: float) -> None:
        """Replace ``worker``'s connection counts in Redis; they expire after ``expiry`` s."""
        await self._shared.write_presence(worker, counts, expiry)

    async def read_presence(self) -> dict[str, int]:
        """Connections by user, summed over every worker whose counts have not expired."""
        return await self._shared.read_presence()

    async def claim_announcement(self, worker: str, interval: float) -> bool:
        """Take the turn to announce presence for ``interval`` seconds, across every worker."""
        return await self._shared.claim_announcement(worker, interval)

    async def write_receipts(self, worker: str, acks: AckSummary, expiry: float) -> None:
        """Replace ``worker``'s ack summary in Redis; it stops counting after ``expiry`` s."""
        await self._shared.write_receipts(worker, acks, expiry)

    async def read_receipts(self) -> dict[str, AckSummary]:
        """Every worker's ack summary that has not expired (one ``HGETALL``)."""
        return await self._shared.read_receipts()

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew lease ``name`` for ``holder`` across every worker (:class:`Leases`)."""
        return await self._shared.acquire_lease(name, holder, ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        """Give lease ``name`` up if ``holder`` has it (:class:`Leases`)."""
        await self._shared.release_lease(name, holder)
