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

Parts
-----
:class:`RedisBackend` holds the parts together, each a module of this package:
:mod:`livepanel.backends.redis.connect` (URLs and topologies), ``settings``,
``link`` (the one client), ``scripts`` (the Lua scripts), ``codec`` (entries to
events: the trust boundary), ``writer`` and ``reader`` (one task each, with
named states), ``replay`` (``since`` ranges and the state at start) and
``shared`` (single-use claims and worker presence).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from redis.asyncio.cluster import RedisCluster
from typing_extensions import override

from livepanel.backends.base import (
    Backend,
    Capability,
    Control,
    Deliver,
    Leases,
    ReaderReport,
    ReaderStatus,
    SharedReceipts,
    SingleUseClaims,
    WorkerPresence,
)
from livepanel.backends.redis.codec import MAX_ENTRY_SIZE, RejectedEntry, decode_entry
from livepanel.backends.redis.connect import (
    RedisClient,
    RedisTarget,
    describe_client,
    describe_error,
    parse_target,
    pop_query,
    redact_url,
)
from livepanel.backends.redis.link import Link
from livepanel.backends.redis.reader import Reader
from livepanel.backends.redis.replay import Replayer, seed_fold
from livepanel.backends.redis.settings import (
    DEFAULT_STREAM,
    MIN_STREAM_LENGTH,
    RedisSettings,
    check_values,
)
from livepanel.backends.redis.shared import SharedCapabilities, SharedRecords
from livepanel.backends.redis.writer import Writer
from livepanel.errors import BackendUnavailable, ConfigurationError
from livepanel.events import Event
from livepanel.protocol import make_id
from livepanel.state import DEFAULT_STATE_LIMIT, StateSnapshot

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

_URL_NUMBERS: tuple[tuple[str, type[int] | type[float]], ...] = (
    ("wait_replicas", int),
    ("wait_timeout", float),
    ("reconnect_delay", float),
    ("reconnect_max_delay", float),
)


class RedisBackend(SharedCapabilities, Backend):
    """Events in a Redis stream shared by every worker process and host.

    Args:
        url_or_client: a ``redis://``, ``rediss://`` (TLS), ``unix://``,
            ``redis+sentinel://`` or ``redis+cluster://`` URL (see
            :mod:`livepanel.backends.redis.connect`; the default is
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

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.SINGLE_USE_CLAIMS,
            Capability.WORKER_PRESENCE,
            Capability.READER_STATUS,
            Capability.SHARED_RECEIPTS,
            Capability.LEASES,
        }
    )
    claims_shared: ClassVar[bool] = True
    leases_shared: ClassVar[bool] = True

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
        values: dict[str, Any] = {
            "stream": stream,
            "history": history,
            "timeout": timeout,
            "max_pending": max_pending,
            "reconnect_delay": reconnect_delay,
            "reconnect_max_delay": reconnect_max_delay,
            "wait_replicas": wait_replicas,
            "wait_timeout": wait_timeout,
            "state_limit": state_limit,
        }
        check_values(**values)  # a bad setting is named before the URL is read
        target: RedisTarget | None = None
        client: RedisClient | None = None
        if url_or_client is None or isinstance(url_or_client, str):
            target = parse_target(
                url_or_client, sentinels=sentinels, service=service, options=redis_options
            )
            topology, location = target.topology, target.location
        else:
            if redis_options or sentinels is not None or service is not None:
                raise ConfigurationError(
                    "RedisBackend: connection options go with a URL, not with a client"
                )
            client = url_or_client
            location = describe_client(client)
            topology = "cluster" if isinstance(client, RedisCluster) else "standalone"
        self.settings = settings = RedisSettings.check(
            topology=topology, location=location, **values
        )
        """Every setting, checked."""
        # the settings under the names they have always had (read them; set nothing here)
        self.stream = stream
        self.history_size = history
        self.maxlen = settings.maxlen
        self.timeout = timeout
        self.max_pending = max_pending
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.wait_replicas = settings.wait_replicas
        self.wait_timeout = wait_timeout
        self.state_limit = state_limit
        self.location = location
        """Where Redis is, passwords hidden: safe for logs."""
        self.topology = topology
        self.cluster = topology == "cluster"
        """True on Redis Cluster: both keys are named to share one hash slot."""
        self.epoch_key = settings.keys.epoch
        self.state_key = settings.keys.state
        self.state_order_key = settings.keys.state_order
        self._link = Link(target, client, timeout=timeout, location=location, topology=topology)
        self._writer = Writer(settings, self._link)
        self._reader = Reader(settings, self._link)
        self._replayer = Replayer(settings, self._link)
        self._shared = SharedRecords(settings, self._link)

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
        url, stream = pop_query(url, "stream")
        if stream is not None:
            options.setdefault("stream", stream)
        for name, kind in _URL_NUMBERS:
            url, value = pop_query(url, name)
            if value is not None:
                try:
                    options.setdefault(name, kind(value))
                except ValueError:
                    raise ConfigurationError(
                        f"RedisBackend: {name}={value!r} in the URL is not a number"
                    ) from None
        return cls(url, history=history, **options)

    @property
    def epoch(self) -> str | None:
        """The epoch this process's reader delivers in (``None`` before start)."""
        return self._reader.epoch

    # ------------------------------------------------------------------ lifecycle

    @override
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
        reader, writer, link, settings = self._reader, self._writer, self._link, self.settings
        if reader.running and writer.loop is loop:
            assert reader.epoch is not None
            return make_id(reader.epoch, reader.last_id)
        if writer.loop is not None and writer.loop is not loop:
            link.loop_closed()  # its connections and tasks went with it
        link.connect()
        try:
            await link.check_once()
            scripts = link.scripts()
            state = await scripts.stream_state(settings.keys, reader.last_id)
            seed = await scripts.seed(settings.keys)
        except ConfigurationError:
            raise
        except Exception as exc:
            raise BackendUnavailable(
                f"livepanel: cannot reach Redis at {settings.location} ({describe_error(exc)}); "
                "check LIVEPANEL_BACKEND_URL and that Redis is running"
            ) from None
        after = seed_fold(reader.fold, state, seed)
        writer.begin(loop)
        reader.begin(loop, deliver, control, state.epoch, after)
        logger.info(
            "livepanel: Redis stream %s at %s, epoch %s, from %s",
            settings.keys.stream,
            settings.location,
            state.epoch,
            reader.last_id,
        )
        await self._shared.warn_of_unknown_types()
        return make_id(state.epoch, reader.last_id)

    @override
    async def stop(self) -> None:
        """Write what is queued (waiting at most ``timeout``), stop both tasks, disconnect."""
        await self._reader.stop()
        await self._writer.stop(self.settings.timeout)
        await self._link.close()

    # ------------------------------------------------------------------ the contract

    @override
    def publish_nowait(self, event: Event) -> Event:
        """Queue ``event`` for Redis from any thread; never blocks, never raises.

        The returned event has no id yet: Redis assigns it. Before :meth:`start`
        the event waits in this process and is written at start.
        """
        self._writer.publish_nowait(event)
        return event

    @override
    async def publish(self, event: Event) -> Event:
        """Write ``event`` to the stream and return it with its id.

        Raises:
            BackendUnavailable: Redis did not take it within ``timeout`` (it
                may still have been written if the reply was lost).
        """
        return await self._writer.publish(event)

    @override
    async def send_control(self, message: dict[str, Any]) -> None:
        """Append a control entry to the stream: every worker's reader acts on it, in order.

        Raises:
            BackendUnavailable: Redis did not take it.
        """
        await self._writer.write_control(message)

    @override
    async def replay(self, since: str) -> list[Event] | None:
        """Every retained entry after ``since``, read in one consistent view of the stream.

        Returns ``None`` when ``since`` is from another epoch, no longer in the
        stream, or Redis cannot answer now.
        """
        if self._writer.loop is None:
            return None
        return await self._replayer.replay(since)

    @override
    async def state(self) -> StateSnapshot:
        """The state at this process's reader position (seeded from Redis at start).

        Raises:
            BackendUnavailable: the backend is not started.
        """
        loop = self._writer.loop
        if self._reader.epoch is None or loop is None:
            raise BackendUnavailable("livepanel: the Redis backend is not started")
        # read your writes: what this process wrote is in the state it answers
        await self._reader.caught_up(loop, self._writer.written, self.settings.timeout)
        return self._reader.snapshot()

    @override
    def stats(self) -> dict[str, Any]:
        """``publish_failures`` (events dropped: not written to Redis), ``publish_pending``
        (waiting for Redis now), ``reader_reconnects`` and ``rejected_entries`` (stream
        entries skipped because they are not valid events, see :func:`decode_entry`)."""
        reader = self._reader
        return {
            "publish_failures": self._writer.publish_failures,
            "publish_pending": self._writer.pending,
            "reader_reconnects": reader.reconnects,
            "rejected_entries": reader.rejected_entries,
            "state_evicted": reader.fold.evicted,
        }

    @override
    def describe(self) -> str:
        """The Redis URL (or the client's address), passwords hidden."""
        return self.settings.location

    # ------------------------------------------------------------------ capabilities

    async def reader_status(self, timeout: float = 2.0) -> ReaderReport:
        """Where this process's reader stands against the stream, asked of Redis now
        (:class:`~livepanel.backends.base.ReaderReport`); a reader waits at most
        ``min(2, timeout * 0.4)`` seconds in one ``XREAD``. :func:`livepanel.health.check`
        turns it into a verdict.

        Example::

            status = await backend.reader_status()
            if status["waiting"] and min(status["lagSeconds"], status["idleSeconds"]) > 5:
                ...  # an entry waits for 5 s and nothing was read meanwhile: a deaf reader
        """
        return await self._reader.status(timeout)

    def __repr__(self) -> str:
        return f"RedisBackend({self.location!r}, stream={self.stream!r}, epoch={self.epoch!r})"


if TYPE_CHECKING:  # mypy holds the declared capabilities to their protocols
    _CLAIMS: type[SingleUseClaims] = RedisBackend
    _PRESENCE: type[WorkerPresence] = RedisBackend
    _READER: type[ReaderStatus] = RedisBackend
    _RECEIPTS: type[SharedReceipts] = RedisBackend
    _LEASES: type[Leases] = RedisBackend
