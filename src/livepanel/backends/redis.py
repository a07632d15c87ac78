"""Scale-out on Redis Streams: every process that shares a stream reaches every dashboard.

Each event becomes one stream entry (``XADD ... MAXLEN ~ history``) whose one
field holds the event's JSON. Each process runs one reader task (``XREAD
BLOCK``) that hands new entries to its broadcaster, so Redis load grows with the
number of processes, not with the number of dashboards. Wire ids are
``"<epoch>:<entry id>"``, e.g. ``"3f9c1a2b4d5e:1700000000000-3"``.

Epochs
------
An entry id alone cannot tell a resuming client whether the history it
resumes in is the one it saw: a stream that was deleted, or lost with a Redis
that restarted without persistence, starts over with new entries. So next to
the stream (``<stream>:epoch``) livepanel keeps a small hash, the *epoch
record*: ``epoch`` (a random token), ``first`` (the first entry added in this
epoch) and, for an epoch begun on a stream that already held entries, ``base``
(the newest entry at that moment). Two Lua scripts keep record and stream
consistent atomically, whatever number of processes race:

* publishing: when the stream does not exist and the record is missing or
  names a stream that had entries (``first`` set), a new epoch begins with the
  entry being added; when the stream exists but its record is gone (deleted, or
  evicted by a ``maxmemory-policy`` that may evict any key), a new epoch begins
  there. Then the ``XADD`` runs and ``first`` is recorded once.
* ensuring (at start and whenever a reader reconnects): the same rule without
  an ``XADD``, so a process that starts on an empty Redis gets an epoch and the
  start id ``<epoch>:0-0`` at once; and a reader that finds the stream's newest
  entry *older* than the last entry it read (Redis came back from an older
  snapshot) retires the epoch, because entry ids could be issued again.

A ``since`` is honoured only when its epoch is the record's and the entry it
names is still in the stream (``<epoch>:0-0`` when ``first`` still is), so a
trimmed, deleted, unpersisted or rolled-back history answers
``resume_unavailable``, never a silent gap. Every reader checks the record with
each read and moves to a new epoch on its own.

Faults
------
Nothing here raises into the application but :meth:`RedisBackend.publish`
(``BackendUnavailable``) and :meth:`RedisBackend.start` (the same, when Redis
cannot be reached at all). The writer and the reader retry with capped
exponential backoff and jitter; a reader continues from the last entry it saw,
so entries written while it was away are still delivered, in order. Events
handed to :meth:`~RedisBackend.publish_nowait` that cannot be written are
dropped, counted in ``stats()["publish_failures"]`` and logged once per outage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from livepanel.backends.base import Backend, Control, Deliver
from livepanel.backends.redis_connect import (
    RedisClient,
    RedisTarget,
    check_deployment,
    companion_key,
    make_client,
    parse_target,
    redact_url,
)
from livepanel.errors import BackendUnavailable, ConfigurationError
from livepanel.events import (
    RESERVED_TYPES,
    Event,
    prepare_payload,
    registered_types,
    state_rules,
)
from livepanel.protocol import make_id, parse_id
from livepanel.state import DEFAULT_STATE_LIMIT, StateFold, StateSnapshot, entry_key

__all__ = [
    "DEFAULT_STREAM",
    "MAX_ENTRY_SIZE",
    "MIN_STREAM_LENGTH",
    "RedisBackend",
    "RejectedEntry",
    "decode_entry",
    "redact_url",
]

logger = logging.getLogger("livepanel")

DEFAULT_STREAM = "livepanel:events"
"""The stream's key unless a ``stream`` is given (``redis://host/0?stream=clawpanel:events``)."""
MIN_STREAM_LENGTH = 100
"""The stream keeps at least this many entries whatever ``history`` is: readers need slack."""
MAX_ENTRY_SIZE = 4 * 1024 * 1024
"""Stream entries larger than this many bytes are skipped (and counted), never parsed.

``publish`` does not refuse a larger event (it cuts only ``stdout``/``stderr``): keep
payloads well below this."""

FIELD = "event"
CONTROL_FIELD = "control"  # an entry for the workers, never for clients (revocation)
START = "0-0"
_WRITE_BATCH = 200  # events per script call
_READ_COUNT = 1000  # entries per XREAD
_REPLAY_PAGE = 1000  # entries per XRANGE of a replay
_DECODE_SLICE = 100  # entries checked between two turns of the event loop
_Position = tuple[int, ...]
_MAX_ID_PART = 2**64 - 1  # a stream entry id is two unsigned 64-bit numbers

# Both scripts start here: make sure the record names the stream's current incarnation
# (a new one starts with an empty state).
_ENSURE_EPOCH = """
local exists = redis.call('EXISTS', KEYS[1]) == 1
if not exists then
  if not epoch or redis.call('HEXISTS', KEYS[2], 'first') == 1 then
    epoch = ARGV[1]
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
    redis.call('HSET', KEYS[2], 'epoch', epoch)
  end
elseif not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[2], 'epoch', epoch)
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if newest[1] then redis.call('HSET', KEYS[2], 'base', newest[1][1]) end
end
"""

# The state, updated with each entry in the same script: KEYS[3] is a hash of entries,
# field "<collection>\0<key>" -> "<seq, 20 digits><entry id>\n<event JSON>", plus "!last"
# (the newest entry folded), "!epoch", "!seq" and "#<collection>" (its size); KEYS[4] is
# a zset of "<collection>\0<seq>\0<key>" in lexical order: a collection's oldest update
# first, for eviction. Keyless collections use the seq as the key.
_FOLD = r"""
local S, O = KEYS[3], KEYS[4]
local function fold(entry_id, spec, json)
  local mode, coll, keep, key = string.match(spec, '^(%a)\n([^\n]*)\n([^\n]*)\n(.*)$')
  if not mode then return end
  local pad = string.format('%020d', redis.call('HINCRBY', S, '!seq', 1))
  local cap = tonumber(ARGV[4])
  if mode == 'k' then key = pad; cap = tonumber(keep) end
  local field = coll .. '\0' .. key
  local old = redis.call('HGET', S, field)
  if old then redis.call('ZREM', O, coll .. '\0' .. string.sub(old, 1, 20) .. '\0' .. key) end
  if mode == 'r' then
    if old then
      redis.call('HDEL', S, field)
      redis.call('HINCRBY', S, '#' .. coll, -1)
    end
    return
  end
  redis.call('HSET', S, field, pad .. entry_id .. '\n' .. json)
  redis.call('ZADD', O, 0, coll .. '\0' .. pad .. '\0' .. key)
  if old or redis.call('HINCRBY', S, '#' .. coll, 1) <= cap then return end
  local oldest = redis.call('ZRANGEBYLEX', O, '[' .. coll .. '\0', '[' .. coll .. '\1',
                            'LIMIT', 0, 1)[1]
  redis.call('ZREM', O, oldest)
  redis.call('HDEL', S, coll .. '\0' .. string.sub(oldest, #coll + 23))
  redis.call('HINCRBY', S, '#' .. coll, -1)
end
"""

# KEYS: stream, record, state, state order. ARGV: fresh epoch, MAXLEN, field, state limit,
# n, n event JSONs, n state specs ("" or "<u|r|k>\n<collection>\n<keep>\n<key JSON>").
_PUBLISH_SCRIPT = (
    "local epoch = redis.call('HGET', KEYS[2], 'epoch')\n"
    + _ENSURE_EPOCH
    + _FOLD
    + """
local n = tonumber(ARGV[5])
local ids = {}
for i = 1, n do
  local entry_id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', ARGV[3], ARGV[5 + i])
  ids[i] = entry_id
  if ARGV[5 + n + i] ~= '' then fold(entry_id, ARGV[5 + n + i], ARGV[5 + i]) end
end
if ids[1] then
  redis.call('HSETNX', KEYS[2], 'first', ids[1])
  redis.call('HSET', S, '!last', ids[n], '!epoch', epoch)
end
return {epoch, ids}
"""
)

# KEYS: record, state. One consistent read of the state and the epoch it belongs to.
_SEED_SCRIPT = """
return {redis.call('HGET', KEYS[1], 'epoch') or false, redis.call('HGETALL', KEYS[2])}
"""

# KEYS: stream, record, state, state order. ARGV: fresh epoch, epoch to retire or '', the
# caller's last entry id.
_STATE_SCRIPT = (
    """
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if ARGV[2] ~= '' and epoch == ARGV[2] then
  redis.call('DEL', KEYS[2])
  epoch = false
end
"""
    + _ENSURE_EPOCH
    + """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local retained = 0
local floor = false
if ARGV[3] ~= '0-0' then
  if #redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3]) > 0 then retained = 1 end
  local below = redis.call('XREVRANGE', KEYS[1], ARGV[3], '-', 'COUNT', 1)
  if below[1] then floor = below[1][1] end
end
return {epoch, newest[1] and newest[1][1] or false, oldest[1] and oldest[1][1] or false,
        redis.call('HGET', KEYS[2], 'base') or false, retained, floor}
"""
)


@dataclasses.dataclass(frozen=True)
class _StreamState:
    epoch: str
    newest: str | None
    oldest: str | None
    base: str | None
    last_retained: bool
    floor: str | None  # the newest entry at or before the caller's last one


class RedisBackend(Backend):
    """Events in a Redis stream shared by every worker process and host.

    Args:
        url_or_client: a ``redis://``, ``rediss://`` (TLS), ``unix://``,
            ``redis+sentinel://`` or ``redis+cluster://`` URL (see
            :mod:`livepanel.backends.redis_connect`; the default is
            ``redis://localhost:6379/0``), or a ``redis.asyncio.Redis`` or
            ``RedisCluster`` client you manage (it is not closed by
            :meth:`stop`, and should not retry commands on its own, or an
            event may be written twice).
        stream: the stream's key; the epoch record lives at ``<stream>:epoch``
            (in a Cluster, at ``{<stream>}:epoch`` unless the stream's name
            has a hash tag, so that both keys share one hash slot).
        history: how many recent entries the stream keeps for ``since``
            (``MAXLEN ~``: Redis may keep somewhat more, and never fewer than
            ``MIN_STREAM_LENGTH``).
        timeout: seconds for connecting and for each command; also bounds how
            long :meth:`publish` waits for a confirmation.
        max_pending: events that may wait for Redis in this process (while it
            is slow or away, or before start); beyond it they are dropped and
            counted.
        reconnect_delay: the first pause after a failure, in seconds; it
            doubles on each failure in a row, with jitter.
        reconnect_max_delay: the longest pause between two attempts.
        sentinels: Sentinel addresses (``["10.0.0.5:26379", ("10.0.0.6", 26379)]``)
            instead of a URL, with ``service``.
        service: the name Sentinel knows the primary by (``"mymaster"``).
        wait_replicas: confirm an event to :meth:`publish` only once this many
            replicas have it (``WAIT``), so a failover cannot lose a confirmed
            event; ``None`` means 1 under Sentinel, 0 otherwise. An event the
            replicas do not confirm within ``wait_timeout`` is reported as
            failed (it is in the primary's stream and may still be delivered).
        wait_timeout: seconds ``WAIT`` may take.
        state_limit: most entries one keyed state collection holds; kept in Redis
            at ``<stream>:state`` and ``<stream>:state:order``, updated by the
            same script that appends the entry.
        **redis_options: redis-py connection options, e.g. ``username``,
            ``password``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
            ``ssl_cert_reqs``, ``client_name``; and ``sentinel_username``,
            ``sentinel_password`` for the sentinels themselves.

    Raises:
        ConfigurationError: a malformed URL or an impossible setting.

    Example::

        Broadcaster("redis://localhost:6379/0")  # or LIVEPANEL_BACKEND_URL=redis://...
        Broadcaster(RedisBackend("rediss://cache:6380/0", history=5000, ssl_ca_certs="ca.pem"))
        Broadcaster(RedisBackend(sentinels=["10.0.0.5:26379"], service="mymaster"))
    """

    def __init__(
        self,
        url_or_client: str | RedisClient | None = None,
        *,
        stream: str = DEFAULT_STREAM,
        history: int = 1000,
        timeout: float = 5.0,
        max_pending: int = 10000,
        reconnect_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        sentinels: Iterable[str | tuple[str, int]] | None = None,
        service: str | None = None,
        wait_replicas: int | None = None,
        wait_timeout: float = 1.0,
        state_limit: int = DEFAULT_STATE_LIMIT,
        **redis_options: Any,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ConfigurationError("RedisBackend: stream must be a non-empty key name")
        if not isinstance(history, int) or history < 0:
            raise ConfigurationError("RedisBackend: history must be an integer >= 0")
        if timeout <= 0 or reconnect_delay <= 0 or reconnect_max_delay < reconnect_delay:
            raise ConfigurationError(
                "RedisBackend: timeout and reconnect_delay must be > 0, and "
                "reconnect_max_delay >= reconnect_delay"
            )
        if max_pending < 1:
            raise ConfigurationError("RedisBackend: max_pending must be >= 1")
        if wait_replicas is not None and (not isinstance(wait_replicas, int) or wait_replicas < 0):
            raise ConfigurationError("RedisBackend: wait_replicas must be an integer >= 0")
        if wait_timeout <= 0:
            raise ConfigurationError("RedisBackend: wait_timeout must be > 0")
        if not isinstance(state_limit, int) or isinstance(state_limit, bool) or state_limit < 1:
            raise ConfigurationError("RedisBackend: state_limit must be an integer >= 1")
        self.state_limit = state_limit
        self.stream = stream
        self.history_size = history
        self.maxlen = max(history, MIN_STREAM_LENGTH)
        self.timeout = timeout
        self.max_pending = max_pending
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.wait_timeout = wait_timeout
        self.epoch: str | None = None
        """The epoch this process's reader delivers in (``None`` before start)."""

        self._target: RedisTarget | None
        if url_or_client is None or isinstance(url_or_client, str):
            self._target = parse_target(
                url_or_client, sentinels=sentinels, service=service, options=redis_options
            )
            self.location = self._target.location
            self.topology = self._target.topology
            self._client: RedisClient | None = self._make_client()
            self._owns_client = True
        else:
            if redis_options or sentinels is not None or service is not None:
                raise ConfigurationError(
                    "RedisBackend: connection options go with a URL, not with a client"
                )
            self._target = None
            self._client = url_or_client
            self._owns_client = False
            self.location = _describe_client(url_or_client)
            self.topology = "cluster" if isinstance(url_or_client, RedisCluster) else "standalone"
        self.cluster = self.topology == "cluster"
        """True on Redis Cluster: both keys are named to share one hash slot."""
        self.epoch_key = companion_key(stream, "epoch", cluster=self.cluster)
        self.state_key = companion_key(stream, "state", cluster=self.cluster)
        self.state_order_key = companion_key(stream, "state:order", cluster=self.cluster)
        # the state at this process's reader position: seeded from Redis at start, then
        # folded with each entry read, so a snapshot matches a position of the stream
        self._fold = StateFold("", limit=state_limit)
        if wait_replicas is None:
            wait_replicas = 1 if self.topology == "sentinel" else 0
        if wait_replicas and self.cluster:
            raise ConfigurationError(
                "RedisBackend: wait_replicas is not supported on Redis Cluster; leave it at 0"
            )
        self.wait_replicas = wait_replicas
        self._checked = False
        self._scripts: tuple[Any, Any, Any] | None = None
        self._scripts_for: RedisClient | None = None

        self._lock = threading.Lock()
        self._pending: list[Event] = []  # published before start, in order
        self._pending_warned = False
        self._outbox: deque[tuple[Event, asyncio.Future[Event] | None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._deliver: Deliver | None = None
        self._control: Control | None = None
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer_wake: asyncio.Future[None] | None = None
        self._writer_paused = False
        self._writer_busy = False
        self._writer_down = False
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._read_waiters: list[asyncio.Future[None]] = []  # state(): the reader moved on
        self._written: tuple[str, _Position] | None = None  # the newest entry we wrote
        self._replay_down = False
        self._stopping = False
        self._last_id = START
        self._position: _Position = (0, 0)
        self._publish_failures = 0
        self._outage_failures = 0
        self._reader_reconnects = 0
        self._rejected_entries = 0
        self._last_read_at = time.monotonic()  # when an XREAD last returned (health)

    @classmethod
    def from_url(cls, url: str, *, history: int = 1000, **options: Any) -> RedisBackend:
        """Build a backend from a URL; ``?stream=<key>`` picks the stream, and
        ``wait_replicas``, ``wait_timeout``, ``reconnect_delay`` and
        ``reconnect_max_delay`` in the query set those arguments.

        Example: ``redis://:secret@cache:6379/0?stream=clawpanel:events``.

        Args:
            url: any URL :class:`RedisBackend` takes.
            history: see :class:`RedisBackend`.
            **options: the other keyword arguments of :class:`RedisBackend`.

        Raises:
            ConfigurationError: a malformed URL.
        """
        url, stream = _pop_query(url, "stream")
        if stream is not None:
            options.setdefault("stream", stream)
        numbers: tuple[tuple[str, type[int] | type[float]], ...] = (
            ("wait_replicas", int),
            ("wait_timeout", float),
            ("reconnect_delay", float),
            ("reconnect_max_delay", float),
        )
        for name, kind in numbers:
            url, value = _pop_query(url, name)
            if value is not None:
                try:
                    options.setdefault(name, kind(value))
                except ValueError:
                    raise ConfigurationError(
                        f"RedisBackend: {name}={value!r} in the URL is not a number"
                    ) from None
        return cls(url, history=history, **options)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, deliver: Deliver, control: Control | None = None) -> str:
        """Connect, learn the stream's epoch and head, start the writer and the reader.

        Returns:
            The id of the newest entry, or ``"<epoch>:0-0"`` for an empty stream.

        Raises:
            BackendUnavailable: Redis cannot be reached; events published in
                the meantime keep waiting (up to ``max_pending``).
            ConfigurationError: the deployment cannot work as configured (a
                ``redis://`` URL naming a Cluster node or a replica, a
                certificate file that does not exist).
        """
        loop = asyncio.get_running_loop()
        if self._reader is not None and not self._reader.done() and self._loop is loop:
            assert self.epoch is not None
            return make_id(self.epoch, self._last_id)
        if self._loop is not None and self._loop is not loop and self._owns_client:
            # the loop we ran on has closed: its connections and tasks went with it
            self._client = None
            self._scripts = self._scripts_for = None
            self._reader = self._writer = None
        if self._client is None:
            self._client = self._make_client()
        try:
            if not self._checked:
                await check_deployment(
                    self._client, self._target or RedisTarget(self.topology, self.location)
                )
                self._checked = True
            state = await self._state()
            seed = await self._seed_read()
        except ConfigurationError:
            raise
        except Exception as exc:
            raise BackendUnavailable(
                f"livepanel: cannot reach Redis at {self.location} ({_describe(exc)}); "
                "check LIVEPANEL_BACKEND_URL and that Redis is running"
            ) from None
        with self._lock:
            self._loop = loop
            self._loop_thread = threading.get_ident()
            self._deliver = deliver
            self._control = control
            self.epoch = state.epoch
            self._move_to(self._seed(state, seed))
            # held events go after the head, so the first subscribers see them live
            self._outbox.extend((event, None) for event in self._pending)
            self._pending.clear()
            self._pending_warned = False
            self._writer = loop.create_task(self._write_forever(), name="livepanel-redis-writer")
            self._reader = loop.create_task(self._read_forever(), name="livepanel-redis-reader")
        logger.info(
            "livepanel: Redis stream %s at %s, epoch %s, from %s",
            self.stream,
            self.location,
            self.epoch,
            self._last_id,
        )
        return make_id(state.epoch, self._last_id)

    async def stop(self) -> None:
        """Write what is queued (waiting at most ``timeout``), stop both tasks, disconnect."""
        reader, writer = self._reader, self._writer
        self._stopping = True
        try:
            if reader is not None:
                await _finish(reader)
            if writer is not None and not writer.done():
                await self._drain(self.timeout)
                await _finish(writer)
        finally:
            self._stopping = False
        with self._lock:
            self._reader = self._writer = None
            self._loop = None
            self._loop_thread = None
            self._deliver = None
            self._control = None
            leftover = list(self._outbox)
            self._outbox.clear()
        lost = 0
        for _event, future in leftover:
            if future is None:
                lost += 1
            elif not future.done():
                future.set_exception(BackendUnavailable("livepanel: the Redis backend stopped"))
        if lost:
            with self._lock:
                self._publish_failures += lost
            logger.warning("livepanel: %d event(s) not written to Redis before stop", lost)
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            self._scripts = self._scripts_for = None
            try:
                await client.aclose()
            except Exception:  # closing a connection that is already gone
                pass

    # ------------------------------------------------------------------ publishing

    def publish_nowait(self, event: Event) -> Event:
        """Queue ``event`` for Redis from any thread; never blocks, never raises.

        The returned event has no id yet: Redis assigns it. Before :meth:`start`
        the event waits in this process and is written at start.
        """
        with self._lock:
            loop = self._loop
            if loop is None:
                self._hold(event)
                return event
        if threading.get_ident() == self._loop_thread:
            self._enqueue(event, None)
            return event
        try:
            loop.call_soon_threadsafe(self._enqueue, event, None)
        except RuntimeError:  # the loop closed under us: write at the next start
            with self._lock:
                self._hold(event)
        return event

    async def publish(self, event: Event) -> Event:
        """Write ``event`` to the stream and return it with its id.

        Raises:
            BackendUnavailable: Redis did not take it within ``timeout`` (it
                may still have been written if the reply was lost).
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._writer is None:
            raise BackendUnavailable(
                "livepanel: the Redis backend is not started in this event loop; "
                "use Broadcaster.apublish(), which starts it"
            )
        future: asyncio.Future[Event] = loop.create_future()
        self._enqueue(event, future)
        try:
            return await asyncio.wait_for(future, self.timeout * 2)
        except asyncio.TimeoutError:
            raise BackendUnavailable(
                f"livepanel: Redis at {self.location} did not confirm the event "
                f"within {self.timeout * 2:g} s"
            ) from None

    def _hold(self, event: Event) -> None:
        """Keep an event until start (the lock is held)."""
        if len(self._pending) >= self.max_pending:
            self._publish_failures += 1
            return
        self._pending.append(event)
        if not self._pending_warned:
            self._pending_warned = True
            logger.warning(
                "livepanel: events wait in this process until its broadcaster starts; "
                "with several workers, start it at startup (await broadcaster.start()) "
                "so every worker's events reach Redis"
            )

    def _enqueue(self, event: Event, future: asyncio.Future[Event] | None) -> None:
        """Put an event in the writer's queue (on the loop's thread)."""
        if self._writer is None:  # stopped between the call and now
            if future is not None:
                future.set_exception(BackendUnavailable("livepanel: the Redis backend stopped"))
            else:
                with self._lock:
                    self._hold(event)
            return
        if len(self._outbox) >= self.max_pending:
            if future is not None:
                future.set_exception(
                    BackendUnavailable(
                        f"livepanel: {self.max_pending} events already wait for Redis"
                    )
                )
            else:
                self._lost(1, f"{self.max_pending} events already wait (max_pending)")
            return
        self._outbox.append((event, future))
        wake = self._writer_wake
        # during a backoff pause only a waiting apublish() brings the next attempt forward
        if wake is not None and not wake.done() and (future is not None or not self._writer_paused):
            wake.set_result(None)

    async def _write_forever(self) -> None:
        failures = 0
        while not self._stopping or self._outbox:
            if not self._outbox:
                self._notify(self._idle_waiters)
                await self._writer_sleep(None)
                continue
            batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), _WRITE_BATCH))]
            self._writer_busy = True
            error: Exception | None = None
            try:
                epoch, ids = await self._append([event for event, _ in batch])
            except asyncio.CancelledError:
                self._outbox.extendleft(reversed(batch))  # stop() accounts for them
                raise
            except Exception as exc:
                error = exc
            finally:
                self._writer_busy = False
            if error is not None:
                self._write_failed(batch, error)
                failures += 1
                await self._forget_idle_connections(error)
                self._writer_paused = True  # until the next attempt; an apublish() cuts it short
                self._notify(self._idle_waiters)
                try:
                    await self._writer_sleep(self._backoff(failures))
                finally:
                    self._writer_paused = False
                continue
            failures = 0
            if self._writer_down:
                self._writer_down = False
                logger.info(
                    "livepanel: writing to Redis at %s again; %d event(s) were dropped meanwhile",
                    self.location,
                    self._outage_failures,
                )
            if ids:
                self._written = (epoch, _position(ids[-1]))
            for (event, future), entry_id in zip(batch, ids, strict=False):
                if future is not None and not future.done():
                    future.set_result(dataclasses.replace(event, id=make_id(epoch, entry_id)))

    async def _writer_sleep(self, timeout: float | None) -> None:
        assert self._loop is not None
        wake = self._writer_wake = self._loop.create_future()
        try:
            await asyncio.wait({wake}, timeout=timeout)
        finally:
            self._writer_wake = None

    async def _append(self, events: list[Event]) -> tuple[str, list[str]]:
        publish_script = self._get_scripts()[0]
        keys = [self.stream, self.epoch_key, self.state_key, self.state_order_key]
        args = [
            _new_epoch(),
            self.maxlen,
            FIELD,
            self.state_limit,
            len(events),
            *(_stored_json(event) for event in events),
            *(_state_spec(event) for event in events),
        ]
        if not self.wait_replicas:
            result = await publish_script(keys=keys, args=args)
            return _text(result[0]), [_text(entry_id) for entry_id in result[1]]
        # WAIT counts the replicas that have this connection's writes: one pipeline, one socket
        pipe = self._require_client().pipeline(transaction=False)
        await publish_script(keys=keys, args=args, client=pipe)  # queued, not run yet
        pipe.execute_command("WAIT", self.wait_replicas, int(self.wait_timeout * 1000))
        result, acked = await pipe.execute()
        if int(acked) < self.wait_replicas:
            raise _Unreplicated(
                f"livepanel: Redis at {self.location} stored the event but {acked} of "
                f"{self.wait_replicas} replica(s) confirmed it within {self.wait_timeout:g} s; "
                "a failover may lose it, or it may still be delivered"
            )
        return _text(result[0]), [_text(entry_id) for entry_id in result[1]]

    def _write_failed(
        self, batch: list[tuple[Event, asyncio.Future[Event] | None]], exc: Exception
    ) -> None:
        message = (
            str(exc)
            if isinstance(exc, _Unreplicated)
            else f"livepanel: Redis at {self.location} cannot take the event "
            f"({_describe(exc)}); try again later"
        )
        lost = 0
        for _event, future in batch:
            if future is None:
                lost += 1
            elif not future.done():
                future.set_exception(BackendUnavailable(message))
        self._lost(lost, _describe(exc))

    def _lost(self, count: int, reason: str) -> None:
        """Count dropped events; log the first failure of an outage only."""
        with self._lock:  # _hold() counts from other threads
            self._publish_failures += count
        self._outage_failures += count
        if not self._writer_down:
            self._writer_down = True
            self._outage_failures = count
            logger.warning(
                "livepanel: cannot write to Redis at %s (%s); events published meanwhile "
                "are dropped and counted in stats()['publish_failures']",
                self.location,
                reason,
            )

    async def _drain(self, timeout: float) -> None:
        """Wait until the writer has tried everything queued, at most ``timeout``."""
        assert self._loop is not None
        deadline = self._loop.time() + timeout
        while self._outbox or self._writer_busy:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return
            waiter = self._loop.create_future()
            self._idle_waiters.append(waiter)
            wake = self._writer_wake
            if wake is not None and not wake.done():
                wake.set_result(None)  # skip a backoff pause: we are shutting down
            await asyncio.wait({waiter}, timeout=remaining)
            if self._writer_paused and not self._outbox:
                return

    # ------------------------------------------------------------------ reading

    async def _read_forever(self) -> None:
        failures = 0
        reconnecting = False
        self._last_read_at = time.monotonic()
        while not self._stopping:
            try:
                if reconnecting:
                    await self._resync()
                    reconnecting = False
                    failures = 0
                    self._reader_reconnects += 1
                    logger.info(
                        "livepanel: reading %s from Redis again, after %s",
                        self.stream,
                        self._last_id,
                    )
                entries, epoch = await self._read()
                self._last_read_at = time.monotonic()
                if epoch != self.epoch:
                    await self._follow_new_epoch()
                    continue
                if not entries:
                    await self._check_primary()
                await self._deliver_entries(entries)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not reconnecting:
                    if isinstance(exc, (RedisError, OSError, asyncio.TimeoutError)):
                        logger.warning(
                            "livepanel: lost Redis at %s while reading events (%s); "
                            "reconnecting with backoff",
                            self.location,
                            _describe(exc),
                        )
                    else:
                        logger.exception("livepanel: the Redis reader failed; restarting it")
                reconnecting = True
                failures += 1
                await asyncio.sleep(self._backoff(failures))

    async def _read(self) -> tuple[list[tuple[str, Any]], str | None]:
        client = self._require_client()
        pipe = client.pipeline(transaction=False)
        pipe.xread({self.stream: self._last_id}, count=_READ_COUNT, block=self._block_ms())
        pipe.hget(self.epoch_key, "epoch")  # the record as it is right after the read
        reply, epoch = await pipe.execute()
        return _stream_entries(reply), None if epoch is None else _text(epoch)

    async def _deliver_entries(self, entries: list[tuple[str, Any]]) -> None:
        """Check and deliver entries in slices, letting the loop run between them: checking an
        entry costs about as much as publishing one, and a read holds up to 1000."""
        for start in range(0, len(entries), _DECODE_SLICE):
            if start:
                await asyncio.sleep(0)
            self._deliver_slice(entries[start : start + _DECODE_SLICE])

    def _deliver_slice(self, entries: list[tuple[str, Any]]) -> None:
        if not entries:
            return
        epoch = self.epoch
        assert epoch is not None
        events: list[Event] = []
        for entry_id, fields in entries:
            control = _control_of(fields)
            if control is not None:  # a revocation, in stream order with the events
                self._fold.apply_all(events)
                if events and self._deliver is not None:
                    self._deliver(events)
                events = []
                if self._control is not None and control:
                    self._control(control)
                continue
            try:
                event = decode_entry(fields)
            except RejectedEntry as exc:
                # anything that can write to the stream could forge frames: skip, count, say so
                self._rejected_entries += 1
                logger.warning(
                    "livepanel: skipped entry %s of %s: %s (counted in "
                    "stats()['rejected_entries'])",
                    entry_id,
                    self.stream,
                    exc.reason,
                )
                continue
            events.append(dataclasses.replace(event, id=make_id(epoch, entry_id)))
        self._move_to(entries[-1][0])
        self._fold.apply_all(events)
        self._notify(self._read_waiters)
        deliver = self._deliver
        if events and deliver is not None:
            try:
                deliver(events)
            except Exception:
                logger.exception("livepanel: delivering events from Redis failed")

    async def _resync(self) -> None:
        """After a reconnect: follow a new epoch, notice a rolled-back or trimmed history."""
        state = await self._state()
        if state.epoch != self.epoch:
            self._adopt(state)
            return
        if self._last_id == START or state.last_retained or state.newest is None:
            return  # (a stream that is gone comes back, if ever, with a new epoch)
        if state.floor is not None:
            # entries before ours survive but ours is gone: Redis came back from an older
            # snapshot, or a replica that lacked the newest entries was promoted; the ids
            # of what was lost may be issued again
            state = await self._state(retire=state.epoch)
            logger.warning(
                "livepanel: Redis stream %s went back from %s to %s; starting a new epoch",
                self.stream,
                self._last_id,
                state.floor,
            )
            self._adopt(state, position=state.floor or state.newest or START)
        elif state.oldest is not None and _position(state.oldest) > self._position:
            logger.warning(
                "livepanel: entries of %s after %s were trimmed before this process read them; "
                "raise history so the stream outlasts Redis outages",
                self.stream,
                self._last_id,
            )

    async def _follow_new_epoch(self) -> None:
        state = await self._state()
        if state.epoch != self.epoch:
            self._adopt(state)

    def _adopt(self, state: _StreamState, position: str | None = None) -> None:
        """Deliver in ``state.epoch`` from now on."""
        old = self.epoch
        self.epoch = state.epoch
        self._fold.reset(state.epoch)  # a new epoch starts with an empty state
        if position is not None:
            self._move_to(position)
        elif state.floor is not None and not state.last_retained:
            # the same stream, rolled back (a failover lost its newest entries): what
            # follows the newest surviving entry before ours is new to this reader
            self._move_to(state.floor)
        elif not state.last_retained:
            # a new incarnation: read it from its start, or from where this epoch took over
            self._move_to(state.base or START)
        self._fold.last_event_id = make_id(state.epoch, self._last_id)
        logger.warning(
            "livepanel: Redis stream %s is in a new epoch %s (was %s): its history was "
            "lost or replaced, so clients resuming from before will refetch their state",
            self.stream,
            state.epoch,
            old,
        )

    def _move_to(self, entry_id: str) -> None:
        self._last_id = entry_id
        self._position = _position(entry_id)

    async def send_control(self, message: dict[str, Any]) -> None:
        """Append a control entry to the stream: every worker's reader acts on it, in order.

        Raises:
            BackendUnavailable: Redis did not take it.
        """
        publish_script = self._get_scripts()[0]
        keys = [self.stream, self.epoch_key, self.state_key, self.state_order_key]
        text = json.dumps(message, separators=(",", ":"))
        args = [_new_epoch(), self.maxlen, CONTROL_FIELD, self.state_limit, 1, text, ""]
        try:
            await asyncio.wait_for(publish_script(keys=keys, args=args), self.timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise BackendUnavailable(
                f"livepanel: Redis at {self.location} did not take a control message "
                f"({_describe(exc)})"
            ) from None

    # ------------------------------------------------------------------ replay

    async def replay(self, since: str) -> list[Event] | None:
        """Every retained entry after ``since``, read in one consistent view of the stream.

        Returns ``None`` when ``since`` is from another epoch, no longer in the
        stream, or Redis cannot answer now.
        """
        epoch, position = parse_id(since)
        client = self._client
        if len(position) != 2 or client is None or self._loop is None:
            return None
        if any(part > _MAX_ID_PART for part in position):
            return None  # no stream entry has such an id: not a Redis failure, just unknown
        entry = f"{position[0]}-{position[1]}"
        try:
            pipe = client.pipeline(transaction=True)  # one consistent view
            pipe.hmget(self.epoch_key, ["epoch", "first"])
            pipe.xrange(self.stream, entry, entry)
            pipe.xrange(
                self.stream, "-" if entry == START else f"({entry}", "+", count=_REPLAY_PAGE
            )
            (current, first), anchor, after = await pipe.execute()
            entries = _entry_list(after)
            if current is not None and _text(current) == epoch:
                entries += await self._rest_of_range(client, epoch, entries)
        except Exception as exc:
            if not self._replay_down:
                self._replay_down = True
                logger.warning(
                    "livepanel: cannot replay from Redis at %s (%s); clients resuming now "
                    "get resume_unavailable",
                    self.location,
                    _describe(exc),
                )
            return None
        self._replay_down = False
        if current is None or _text(current) != epoch:
            return None
        if entries and entries[-1] is None:
            return None  # the epoch changed while the range was read: cannot vouch for it
        if entry == START:
            if first is None:
                if entries:
                    return None  # entries without a recorded start: cannot vouch for them
            else:
                start = _position(_text(first))
                entries = [e for e in entries if _position(e[0]) >= start]
                if not entries or _position(entries[0][0]) != start:
                    return None  # the epoch's first entry was trimmed
        elif not anchor:
            return None
        events: list[Event] = []
        for entry_id, fields in entries:
            try:
                event = decode_entry(fields)
            except RejectedEntry:
                continue  # logged and counted when the reader met it
            events.append(dataclasses.replace(event, id=make_id(epoch, entry_id)))
        return events

    async def _rest_of_range(
        self, client: Any, epoch: str, first_page: list[tuple[str, Any]]
    ) -> list[Any]:
        """The entries after a full first page, a page at a time (one reply never holds a
        whole long history); ends with ``None`` when the epoch changed meanwhile."""
        rest: list[Any] = []
        page = first_page
        while len(page) == _REPLAY_PAGE:
            pipe = client.pipeline(transaction=True)
            pipe.hget(self.epoch_key, "epoch")
            pipe.xrange(self.stream, f"({page[-1][0]}", "+", count=_REPLAY_PAGE)
            current, after = await pipe.execute()
            if current is None or _text(current) != epoch:
                return [None]
            page = _entry_list(after)
            rest.extend(page)
        return rest

    # ------------------------------------------------------------------ state

    async def state(self) -> StateSnapshot:
        """The state at this process's reader position (seeded from Redis at start).

        Raises:
            BackendUnavailable: the backend is not started.
        """
        if self.epoch is None or self._loop is None:
            raise BackendUnavailable("livepanel: the Redis backend is not started")
        # read your writes: what this process wrote is in the state it answers
        loop = self._loop
        deadline = loop.time() + self.timeout
        while (written := self._written) is not None and written[0] == self.epoch:
            remaining = deadline - loop.time()
            if self._position >= written[1] or remaining <= 0:
                break
            waiter = loop.create_future()
            self._read_waiters.append(waiter)
            await asyncio.wait({waiter}, timeout=remaining)
        return self._fold.snapshot()

    async def _seed_read(self) -> tuple[str | None, dict[str, str]]:
        """The state kept in Redis and the epoch it belongs to, in one read."""
        result = await self._get_scripts()[2](keys=[self.epoch_key, self.state_key])
        epoch = None if result[0] is None else _text(result[0])
        flat = [_text(item) for item in result[1]]
        return epoch, dict(zip(flat[0::2], flat[1::2], strict=True))

    def _seed(self, state: _StreamState, seed: tuple[str | None, dict[str, str]]) -> str:
        """Load the fold from Redis; return the entry the reader starts after.

        The state names the newest entry it folded (``!last``): the reader
        delivers what follows, so the fold and the stream stay at one position.
        """
        epoch, fields = seed
        last = fields.get("!last")
        if epoch != state.epoch or fields.get("!epoch") != state.epoch or last is None:
            start = state.newest or START  # no state kept in this epoch yet
            self._fold.reset(state.epoch, make_id(state.epoch, start))
            return start
        entries: list[tuple[str, Event]] = []
        for field, value in fields.items():
            if field[:1] in ("!", "#"):
                continue
            head, _, text = value.partition("\n")
            try:
                event = decode_entry({FIELD: text})
            except RejectedEntry:
                continue  # not something livepanel wrote: leave it out of the state
            entries.append(
                (head[:20], dataclasses.replace(event, id=make_id(state.epoch, head[20:])))
            )
        entries.sort(key=lambda item: item[0])
        self._fold.reset(state.epoch)
        self._fold.apply_all(event for _, event in entries)
        self._fold.last_event_id = make_id(state.epoch, last)
        return last

    # ------------------------------------------------------------------ numbers

    def stats(self) -> dict[str, Any]:
        """``publish_failures`` (events dropped: not written to Redis), ``publish_pending``
        (waiting for Redis now), ``reader_reconnects`` and ``rejected_entries`` (stream
        entries skipped because they are not valid events, see :func:`decode_entry`)."""
        return {
            "publish_failures": self._publish_failures,
            "publish_pending": len(self._outbox) + len(self._pending),
            "reader_reconnects": self._reader_reconnects,
            "rejected_entries": self._rejected_entries,
            "state_evicted": self._fold.evicted,
        }

    async def reader_status(self, timeout: float = 2.0) -> dict[str, Any]:
        """Where this process's reader stands against the stream, asked of Redis now.

        Keys: ``reachable`` (Redis answered within ``timeout`` seconds),
        ``running`` (the reader task is alive), ``waiting`` (the stream holds
        entries the reader has not read), ``lagSeconds`` (the age, by Redis's
        clock, of the oldest entry not yet read: ``0.0`` when none waits,
        ``None`` when Redis did not answer) and ``idleSeconds`` (since the
        reader's last ``XREAD`` returned; a reader waits at most
        ``min(2, timeout * 0.4)`` seconds in one). :func:`livepanel.health.check`
        turns them into a verdict.

        Example::

            status = await backend.reader_status()
            if status["waiting"] and min(status["lagSeconds"], status["idleSeconds"]) > 5:
                ...  # an entry waits for 5 s and nothing was read meanwhile: a deaf reader
        """
        reader, client = self._reader, self._client
        running = reader is not None and not reader.done()
        idle = time.monotonic() - self._last_read_at if running else None
        status: dict[str, Any] = {
            "reachable": False,
            "running": running,
            "waiting": False,
            "lagSeconds": None,
            "idleSeconds": idle,
        }
        if client is None:
            return status
        last = self._last_id
        try:
            pipe = client.pipeline(transaction=False)
            pipe.time()
            pipe.xrange(self.stream, "-" if last == START else f"({last}", "+", count=1)
            (seconds, micros), unread = await asyncio.wait_for(pipe.execute(), timeout)
        except Exception:  # unreachable, slow, or a connection in a bad state: all unhealthy
            return status
        status["reachable"] = True
        entries = _entry_list(unread)
        # the reader may have moved on while we asked: what it has read since is not waiting
        if entries and _position(entries[0][0]) > self._position:
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            status["waiting"] = True
            status["lagSeconds"] = max(0.0, (now_ms - _position(entries[0][0])[0]) / 1000)
        else:
            status["lagSeconds"] = 0.0
        return status

    def __repr__(self) -> str:
        return f"RedisBackend({self.location!r}, stream={self.stream!r}, epoch={self.epoch!r})"

    # ------------------------------------------------------------------ helpers

    def _make_client(self) -> RedisClient:
        assert self._target is not None
        defaults: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            # livepanel retries itself; a blind retry could XADD twice
            "retry": Retry(NoBackoff(), 0),
            "client_name": "livepanel",
        }
        return make_client(self._target, defaults)

    async def _check_primary(self) -> None:
        """Under Sentinel, after a quiet read: a failover leaves this reader on the old
        primary, which stays up and silent until Sentinel demotes it; move now."""
        pool = getattr(self._client, "connection_pool", None)
        if self.topology != "sentinel" or not isinstance(pool, SentinelConnectionPool):
            return
        known = pool.master_address
        try:
            current = await pool.get_master_address()  # type: ignore[no-untyped-call]
        except RedisError:  # no sentinel answers: keep reading from the primary we have
            return
        if known is not None and current != known:
            raise RedisConnectionError(f"Sentinel moved the primary to {current[0]}:{current[1]}")

    async def _forget_idle_connections(self, error: Exception) -> None:
        """After a lost connection or an unconfirmed write, the pool's idle connections lead
        to a server that is gone or no longer the primary: open new ones (Sentinel asks
        again where the primary is)."""
        if not isinstance(error, (RedisError, OSError, _Unreplicated)):
            return
        pool = getattr(self._client, "connection_pool", None)
        if pool is None:
            return
        try:
            await pool.disconnect(inuse_connections=False)
        except Exception:  # closing sockets that are already gone
            pass

    def _require_client(self) -> RedisClient:
        if self._client is None:
            raise BackendUnavailable("livepanel: the Redis backend is stopped")
        return self._client

    def _get_scripts(self) -> tuple[Any, Any, Any]:
        client = self._require_client()
        if self._scripts is None or self._scripts_for is not client:
            self._scripts = (
                client.register_script(_PUBLISH_SCRIPT),
                client.register_script(_STATE_SCRIPT),
                client.register_script(_SEED_SCRIPT),
            )
            self._scripts_for = client
        return self._scripts

    async def _state(self, retire: str = "") -> _StreamState:
        state_script = self._get_scripts()[1]
        result = await state_script(
            keys=[self.stream, self.epoch_key, self.state_key, self.state_order_key],
            args=[_new_epoch(), retire, self._last_id],
        )
        epoch, newest, oldest, base, retained, floor = result
        return _StreamState(
            epoch=_text(epoch),
            newest=None if newest is None else _text(newest),
            oldest=None if oldest is None else _text(oldest),
            base=None if base is None else _text(base),
            last_retained=bool(retained),
            floor=None if floor is None else _text(floor),
        )

    def _block_ms(self) -> int:
        """How long one XREAD waits: well inside the socket timeout, so a stall is noticed."""
        longest = 1000 if self.topology == "sentinel" else 2000  # see _check_primary()
        return max(50, min(longest, int(self.timeout * 400)))

    def _backoff(self, failures: int) -> float:
        delay = min(self.reconnect_max_delay, self.reconnect_delay * 2.0 ** min(failures - 1, 30))
        return delay * random.uniform(0.5, 1.0)

    @staticmethod
    def _notify(waiters: list[asyncio.Future[None]]) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        waiters.clear()


# ---------------------------------------------------------------------- module helpers


class _Unreplicated(Exception):
    """Written to the primary, but not confirmed by ``wait_replicas`` replicas in time."""


async def _finish(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it; cancel again if a cancellation was swallowed
    (``asyncio.wait_for`` can lose one on Python < 3.12)."""
    for _ in range(50):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if task.done() and not task.cancelled() and task.exception() is not None:
        logger.warning("livepanel: a Redis backend task ended with %r", task.exception())


def _pop_query(url: str, name: str) -> tuple[str, str | None]:
    """Take the query parameter ``name`` out of ``url``: (the rest of the URL, its value)."""
    base, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    values = [value for key, value in pairs if key == name]
    if not values:
        return url, None
    kept = urlencode([(key, value) for key, value in pairs if key != name])
    return (f"{base}?{kept}" if kept else base), values[-1]


def _describe_client(client: Any) -> str:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _new_epoch() -> str:
    return secrets.token_hex(6)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _position(entry_id: str) -> _Position:
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq or 0))


def _entry_list(entries: Any) -> list[tuple[str, Any]]:
    return [(_text(entry_id), fields) for entry_id, fields in entries or ()]


def _stream_entries(reply: Any) -> list[tuple[str, Any]]:
    """The entries of the one stream in an XREAD reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return _entry_list(next(iter(reply.values())))
    return _entry_list(reply[0][1])


def _control_of(fields: Any) -> dict[str, Any] | None:
    """A control entry's message (``{}`` when unreadable), or ``None`` for any other entry."""
    if not isinstance(fields, dict):
        return None
    raw = fields.get(CONTROL_FIELD.encode(), fields.get(CONTROL_FIELD))
    if raw is None:
        return None
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return message if isinstance(message, dict) else {}


def _state_spec(event: Event) -> str:
    """How the publish script folds ``event`` into the state kept in Redis ("" for none)."""
    rule = state_rules().get(event.type)
    if rule is None:
        return ""
    where = entry_key(event, rule)
    if where is None:
        return ""
    if rule.key is None:
        return f"k\n{rule.collection}\n{rule.keep or 1}\n"
    key = json.dumps(where[1], ensure_ascii=False)
    return f"{'r' if rule.removes else 'u'}\n{rule.collection}\n\n{key}"


def _stored_json(event: Event) -> str:
    """The entry's JSON: the wire form, plus its audience and trace context when it has them."""
    if not event.trace and event.audience is None:
        return event.to_json()
    return json.dumps(event.stored_dict(), separators=(",", ":"), ensure_ascii=False)


class RejectedEntry(ValueError):
    """A stream entry that is not a valid livepanel event; ``reason`` says why, in words
    that hold nothing of the entry itself (safe to log).

    Example::

        >>> try:
        ...     decode_entry({b"event": b'{"type": "welcome", "payload": {}}'})
        ... except RejectedEntry as exc:
        ...     print(exc.reason)
        reserved type: welcome
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_entry(fields: Any) -> Event:
    """The event a stream entry holds, checked as :meth:`Broadcaster.publish` checks one.

    Anything that can write to the stream can reach every dashboard, so an entry
    is trusted no more than a publisher: at most :data:`MAX_ENTRY_SIZE` bytes of
    strict UTF-8 JSON without ``NaN``, ``Infinity`` or numbers that overflow; a
    registered type that is not one of the server's own frames
    (:data:`livepanel.events.RESERVED_TYPES`); and a payload validated, redacted and cut by
    :func:`livepanel.events.prepare_payload` (the same check is harmless for
    entries livepanel wrote itself). A type is registered per process: every
    process reading the stream must import the payload classes of every type
    published to it.

    Raises:
        RejectedEntry: the entry is none of that.

    Example::

        >>> decode_entry({b"event": b'{"type":"session.killed","timestamp":'
        ...     b'"2026-02-21T10:00:00.000Z","payload":{"sessionKey":"s1","agentId":"a1"}}'}).type
        'session.killed'
    """
    raw = (fields.get(FIELD.encode()) or fields.get(FIELD)) if isinstance(fields, dict) else None
    if not isinstance(raw, (bytes, str)):
        raise RejectedEntry(f"not a livepanel event (no {FIELD!r} field)")
    if len(raw) > MAX_ENTRY_SIZE:
        raise RejectedEntry(f"larger than {MAX_ENTRY_SIZE} bytes")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = json.loads(text, parse_constant=_not_json, parse_float=_finite_float)
        event = Event.from_dict(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise RejectedEntry("not a livepanel event (JSON with type, timestamp, payload)") from None
    if event.type in RESERVED_TYPES:
        raise RejectedEntry(f"reserved type: {event.type}")
    if event.type not in registered_types():
        raise RejectedEntry("unregistered event type")  # its name is the writer's choice
    try:
        payload = prepare_payload(event.type, event.payload)
    except (ValueError, TypeError, RecursionError):
        # the message may quote the entry's values: name only the type, a registered name
        raise RejectedEntry(f"invalid payload for {event.type}") from None
    return Event(event.type, payload, event.timestamp, trace=event.trace, audience=event.audience)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number overflows")
    return value
