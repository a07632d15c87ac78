"""The contract between the broadcaster and a backend, and the capabilities a backend may declare.

A backend has four duties, and nothing else:

* **store**: :meth:`Backend.publish` / :meth:`Backend.publish_nowait` append
  an event to the stream and give it an id, ``"<epoch>:<position>"`` (see
  :mod:`livepanel.protocol`), increasing within the stream;
* **replay a range**: :meth:`Backend.replay` returns every retained event
  after a given id, in stream order, or ``None`` when that id is not itself
  retained in the current epoch;
* **deliver in order**: once started, it calls ``deliver`` with every new
  event of the stream exactly once, in stream order, one call at a time (from
  any thread), and ``control`` with every message of
  :meth:`Backend.send_control`, from this process or any other sharing the
  stream;
* **keep the state** (optional): :meth:`Backend.state` returns the fold of
  the stream's events (:class:`livepanel.state.StateFold`) up to and
  including one event id, read in one step with that id, so that it matches
  a stream position. Without it, a ``?state=1`` connection is refused.

What a backend need not do is line its live feed up with a replay: the
broadcaster holds live events back while a replay runs and drops the ones
the replay covers, whether the feed runs ahead of the stored range or behind
it. See ``docs/concepts.md``.

Beyond the contract, a backend may declare **capabilities** in
:attr:`Backend.capabilities` and implement the matching protocol; the
features built on them ask through :func:`single_use_claims_of`,
:func:`worker_presence_of` and :func:`reader_status_of`, never by probing:

* :class:`SingleUseClaims` makes a connect ticket single-use
  (:mod:`livepanel.tickets`); without claims shared by every process,
  ``Tickets`` refuses to run with more than one worker;
* :class:`WorkerPresence` lets every worker see the others' connections
  (:mod:`livepanel.presence`);
* :class:`ReaderStatus` tells health checks and metrics how far this
  process's reader trails the stream (:mod:`livepanel.health`);
* :class:`SharedReceipts` lets every worker read the others' ack summaries
  (:mod:`livepanel.receipts`), so receipts count every worker's dashboards.
* :class:`Leases` lets one worker at a time run a periodic publisher
  (:mod:`livepanel.leader`), asked through :func:`leases_of`.
* :class:`TransactionalPublish` writes an event inside the caller's open
  database transaction (``Broadcaster.apublish(..., transaction=conn)``):
  delivered once if it commits, never if it rolls back.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypedDict, runtime_checkable

from livepanel.errors import ConfigurationError
from livepanel.events import Event
from livepanel.state import StateSnapshot

__all__ = [
    "AckSummary",
    "Backend",
    "Capability",
    "Control",
    "Deliver",
    "Leases",
    "ReaderReport",
    "ReaderStatus",
    "SharedReceipts",
    "SingleUseClaims",
    "TransactionalPublish",
    "WorkerPresence",
    "leases_of",
    "reader_status_of",
    "shared_receipts_of",
    "single_use_claims_of",
    "transactional_publish_of",
    "worker_presence_of",
]

Deliver = Callable[[Sequence[Event]], None]
"""Called with newly stored events, in stream order, one call at a time, from any thread."""
Control = Callable[[dict[str, Any]], None]
"""Called with each control message (a revocation) sent through the stream, on any thread."""


class Capability(enum.Enum):
    """An ability beyond the contract, declared in :attr:`Backend.capabilities`.

    Example::

        >>> from livepanel import MemoryBackend
        >>> sorted(capability.value for capability in MemoryBackend.capabilities)
        ['leases', 'reader_status', 'shared_receipts', 'single_use_claims']
    """

    SINGLE_USE_CLAIMS = "single_use_claims"
    """The backend implements :class:`SingleUseClaims`."""
    WORKER_PRESENCE = "worker_presence"
    """The backend implements :class:`WorkerPresence`."""
    READER_STATUS = "reader_status"
    """The backend implements :class:`ReaderStatus`."""
    SHARED_RECEIPTS = "shared_receipts"
    """The backend implements :class:`SharedReceipts`."""
    LEASES = "leases"
    """The backend implements :class:`Leases`."""
    TRANSACTIONAL_PUBLISH = "transactional_publish"
    """The backend implements :class:`TransactionalPublish`."""


@runtime_checkable
class SingleUseClaims(Protocol):
    """Keys that can be claimed once until they expire: what makes a connect ticket single-use.

    ``claims_shared`` is ``True`` when a claim holds in every process that
    shares the backend (Redis: ``SET NX``), ``False`` when it holds in this
    process only (memory). Declare it on the class.

    Example::

        claims = single_use_claims_of(broadcaster.backend)
        if claims is not None:
            first = await broadcaster.call_backend(lambda: claims.claim_once("ticket:n1", 30.0))
    """

    claims_shared: ClassVar[bool]

    async def claim_once(self, key: str, ttl: float) -> bool:
        """Claim ``key`` for ``ttl`` seconds: ``True`` the first time, ``False`` while it holds.

        Raises:
            BackendUnavailable: the backend cannot say whether ``key`` was claimed.
        """
        ...


@runtime_checkable
class WorkerPresence(Protocol):
    """Each worker's connection counts, where every worker can read them.

    Example::

        presence = worker_presence_of(broadcaster.backend)
        await presence.write_presence("w1", {"alice": 2}, expiry=15.0)
        await presence.read_presence()  # {"alice": 2, ...}: every live worker's counts summed
    """

    async def write_presence(self, worker: str, counts: Mapping[str, int], expiry: float) -> None:
        """Replace ``worker``'s counts by user; they stop counting after ``expiry`` seconds
        unless written again (a worker that dies drops out on its own).

        Raises:
            BackendUnavailable: the backend cannot take them now.
        """
        ...

    async def read_presence(self) -> dict[str, int]:
        """Connections by user, summed over every worker whose counts have not expired.

        Raises:
            BackendUnavailable: the backend cannot answer now.
        """
        ...

    async def claim_announcement(self, worker: str, interval: float) -> bool:
        """Take the turn to announce presence for ``interval`` seconds, across every worker:
        ``True`` when no worker holds it.

        Raises:
            BackendUnavailable: the backend cannot answer now.
        """
        ...


class ReaderReport(TypedDict):
    """Where a process's reader stands against the stream (see :class:`ReaderStatus`).

    Example::

        {"reachable": True, "running": True, "waiting": False, "lagSeconds": 0.0,
         "idleSeconds": 0.4}
    """

    reachable: bool
    """The backend answered in time."""
    running: bool
    """The reader is alive (a backend without a reader task: always)."""
    waiting: bool
    """The stream holds entries the reader has not read."""
    lagSeconds: float | None
    """Age of the oldest unread entry (``0.0`` when none waits, ``None`` when unreachable)."""
    idleSeconds: float | None
    """Seconds since the reader last read (``None`` when it is not running)."""


@runtime_checkable
class ReaderStatus(Protocol):
    """A reader that can say how far it trails the stream: for health checks and metrics.

    Example::

        status = await reader_status_of(backend).reader_status(timeout=2.0)
        status["lagSeconds"]  # 0.0: up to date
    """

    async def reader_status(self, timeout: float = 2.0) -> ReaderReport:
        """Where this process's reader stands, asked of the backend now, within ``timeout`` s."""
        ...


AckSummary = list[tuple[str, str, int]]
"""One worker's acks: ``(user, newest acked id, how many connections)`` rows (user ``""``:
anonymous)."""


@runtime_checkable
class SharedReceipts(Protocol):
    """Each worker's ack summary, where every worker can read it: receipts across workers.

    A summary is small (a row per user and acked id) and written at most a few
    times a second by :class:`livepanel.receipts.ReceiptBook`, never per ack.

    Example::

        receipts = shared_receipts_of(broadcaster.backend)
        await receipts.write_receipts("w1", [("alice", "3f9a1c2e:7", 2)], expiry=15.0)
        await receipts.read_receipts()  # {"w1": [("alice", "3f9a1c2e:7", 2)], ...}
    """

    async def write_receipts(self, worker: str, acks: AckSummary, expiry: float) -> None:
        """Replace ``worker``'s summary; it stops counting after ``expiry`` seconds unless
        written again (a worker that dies drops out on its own).

        Raises:
            BackendUnavailable: the backend cannot take it now.
        """
        ...

    async def read_receipts(self) -> dict[str, AckSummary]:
        """Every worker's summary that has not expired, by worker.

        Raises:
            BackendUnavailable: the backend cannot answer now.
        """
        ...


@runtime_checkable
class Leases(Protocol):
    """Named leases with an expiry, held by one holder at a time: what runs a job once.

    ``leases_shared`` is ``True`` when a lease excludes every process sharing
    the backend (Redis), ``False`` when it excludes this process's other
    holders only (memory). The backend's clock decides expiry, so a holder's
    clock that runs fast, slow or stopped cannot stretch a lease. Declare it
    on the class.

    Example::

        leases = leases_of(broadcaster.backend)
        token = await leases.acquire_lease("cron-poller", "worker-1", ttl=15.0)
        # an int while worker-1 holds it (renewed), None while another holder does
    """

    leases_shared: ClassVar[bool]

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take lease ``name`` for ``holder`` for ``ttl`` seconds, or renew it if ``holder``
        has it: its fencing token (a number that grows each time the lease changes
        hands), or ``None`` while another holder has it.

        Raises:
            BackendUnavailable: the backend cannot say who holds it.
        """
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give lease ``name`` up if ``holder`` has it; nothing otherwise.

        Raises:
            BackendUnavailable: the backend cannot be reached (the lease then expires).
        """
        ...


@runtime_checkable
class TransactionalPublish(Protocol):
    """Writes an event inside the caller's open database transaction, through the caller's
    own connection: delivered exactly once if the transaction commits, never if it rolls back.

    The event's id is given at commit, so the event returned has none; it
    reaches dashboards (and ``subscribe()``) with its id once committed.

    Example::

        writer = transactional_publish_of(broadcaster.backend)
        async with conn.transaction():
            await conn.execute("DELETE FROM sessions WHERE key = %s", (key,))
            await writer.apublish_in(conn, event)  # what apublish(..., transaction=conn) does
    """

    def publish_in(self, transaction: Any, event: Event) -> Event:
        """Write ``event`` through ``transaction``, the driver's sync connection.

        Raises:
            ConfigurationError: ``transaction`` is not a connection with a transaction open.
        """
        ...

    async def apublish_in(self, transaction: Any, event: Event) -> Event:
        """Write ``event`` through ``transaction``, the driver's async connection.

        Raises:
            ConfigurationError: ``transaction`` is not a connection with a transaction open.
        """
        ...


_PROTOCOLS: dict[Capability, type[Any]] = {
    Capability.SINGLE_USE_CLAIMS: SingleUseClaims,
    Capability.WORKER_PRESENCE: WorkerPresence,
    Capability.READER_STATUS: ReaderStatus,
    Capability.SHARED_RECEIPTS: SharedReceipts,
    Capability.LEASES: Leases,
    Capability.TRANSACTIONAL_PUBLISH: TransactionalPublish,
}
_MEMBERS: dict[Capability, tuple[str, ...]] = {
    Capability.SINGLE_USE_CLAIMS: ("claims_shared", "claim_once"),
    Capability.WORKER_PRESENCE: ("write_presence", "read_presence", "claim_announcement"),
    Capability.READER_STATUS: ("reader_status",),
    Capability.SHARED_RECEIPTS: ("write_receipts", "read_receipts"),
    Capability.LEASES: ("leases_shared", "acquire_lease", "release_lease"),
    Capability.TRANSACTIONAL_PUBLISH: ("publish_in", "apublish_in"),
}


class Backend(abc.ABC):
    """Stores the stream of events, replays a range of it, delivers new events in order.

    ``MemoryBackend`` and ``RedisBackend`` are the two that ship. Example, a
    complete backend of your own (one process, every event kept)::

        import dataclasses
        import secrets
        import threading

        from livepanel import Broadcaster
        from livepanel.backends import Backend
        from livepanel.protocol import make_id, parse_id


        class ListBackend(Backend):
            def __init__(self):
                self.epoch = secrets.token_hex(4)  # a new history: a new epoch
                self.events = []
                self.lock = threading.Lock()  # ids and delivery in one order
                self.deliver = self.control = None

            async def start(self, deliver, control=None):
                with self.lock:
                    self.deliver, self.control = deliver, control
                    return make_id(self.epoch, str(len(self.events)))

            def publish_nowait(self, event):
                with self.lock:
                    event = dataclasses.replace(
                        event, id=make_id(self.epoch, str(len(self.events) + 1))
                    )
                    self.events.append(event)
                    if self.deliver is not None:
                        self.deliver([event])
                return event

            async def publish(self, event):
                return self.publish_nowait(event)

            async def replay(self, since):
                epoch, position = parse_id(since)
                with self.lock:
                    if epoch != self.epoch or len(position) != 1 or position[0] > len(self.events):
                        return None
                    return self.events[position[0] :]

            async def send_control(self, message):
                if self.control is not None:  # one process: straight back
                    self.control(message)


        broadcaster = Broadcaster(ListBackend())
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    """What the backend offers beyond the contract; each needs its protocol implemented."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for capability in cls.capabilities:
            missing = [name for name in _MEMBERS[capability] if not hasattr(cls, name)]
            if missing:
                raise TypeError(_undelivered(cls.__name__, capability, missing))

    @abc.abstractmethod
    async def start(self, deliver: Deliver, control: Control | None = None) -> str:
        """Begin delivering new events to ``deliver``, from the running event loop.

        Returns the id of the newest event, or the epoch's start id while the
        stream is empty; ``deliver`` gets exactly the events after it. Called
        again, on another loop, when the loop it ran on has closed. ``control``
        gets every message of :meth:`send_control`, from this process or any
        other sharing the stream.
        """

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop delivering and release connections."""

    @abc.abstractmethod
    def publish_nowait(self, event: Event) -> Event:
        """Hand ``event`` on from any thread without blocking.

        Returns the event, with its ``id`` when the backend assigns it at once.
        """

    @abc.abstractmethod
    async def publish(self, event: Event) -> Event:
        """Store ``event`` and return it with its ``id``; raise ``BackendUnavailable``."""

    @abc.abstractmethod
    async def replay(self, since: str) -> list[Event] | None:
        """Every retained event after ``since``, or ``None`` when ``since`` is not retained."""

    @abc.abstractmethod
    async def send_control(self, message: dict[str, Any]) -> None:
        """Hand ``message`` to the ``control`` callback of every process sharing the stream
        (this one included); raise ``BackendUnavailable`` when it cannot."""

    async def state(self) -> StateSnapshot:
        """The state folded from the stream, with the id of the newest event it covers.

        Raises:
            BackendUnavailable: the state cannot be read now.
        """
        raise NotImplementedError(
            f"{type(self).__name__} keeps no state; implement Backend.state() to serve ?state=1"
        )

    def stats(self) -> dict[str, Any]:
        """Backend counters merged into ``Broadcaster.stats()``."""
        return {}

    def describe(self) -> str:
        """Where the stream lives, for people and logs: a URL with any password hidden."""
        return type(self).__name__


def single_use_claims_of(backend: Backend) -> SingleUseClaims | None:
    """The backend's :class:`SingleUseClaims` when it declares them, else ``None``.

    Raises:
        ConfigurationError: the backend declares the capability without implementing it.

    Example::

        >>> from livepanel import MemoryBackend
        >>> single_use_claims_of(MemoryBackend()).claims_shared
        False
    """
    if Capability.SINGLE_USE_CLAIMS not in backend.capabilities:
        return None
    if not isinstance(backend, SingleUseClaims):
        raise ConfigurationError(_broken(backend, Capability.SINGLE_USE_CLAIMS))
    return backend


def worker_presence_of(backend: Backend) -> WorkerPresence | None:
    """The backend's :class:`WorkerPresence` when it declares it, else ``None``.

    Raises:
        ConfigurationError: the backend declares the capability without implementing it.

    Example::

        presence = worker_presence_of(broadcaster.backend)
        counts = await presence.read_presence() if presence else broadcaster.census.users
    """
    if Capability.WORKER_PRESENCE not in backend.capabilities:
        return None
    if not isinstance(backend, WorkerPresence):
        raise ConfigurationError(_broken(backend, Capability.WORKER_PRESENCE))
    return backend


def reader_status_of(backend: Backend) -> ReaderStatus | None:
    """The backend's :class:`ReaderStatus` when it declares it, else ``None``.

    Raises:
        ConfigurationError: the backend declares the capability without implementing it.

    Example::

        reader = reader_status_of(broadcaster.backend)
        lag = (await reader.reader_status())["lagSeconds"] if reader else 0.0
    """
    if Capability.READER_STATUS not in backend.capabilities:
        return None
    if not isinstance(backend, ReaderStatus):
        raise ConfigurationError(_broken(backend, Capability.READER_STATUS))
    return backend


def shared_receipts_of(backend: Backend) -> SharedReceipts | None:
    """The backend's :class:`SharedReceipts` when it declares them, else ``None``.

    Raises:
        ConfigurationError: the backend declares the capability without implementing it.

    Example::

        >>> from livepanel import MemoryBackend
        >>> shared_receipts_of(MemoryBackend()) is not None
        True
    """
    if Capability.SHARED_RECEIPTS not in backend.capabilities:
        return None
    if not isinstance(backend, SharedReceipts):
        raise ConfigurationError(_broken(backend, Capability.SHARED_RECEIPTS))
    return backend


def leases_of(backend: Backend) -> Leases | None:
    """The backend's :class:`Leases` when it declares them, else ``None``.

    Raises:
        ConfigurationError: the backend declares the capability without implementing it.

    Example::

        >>> from livepanel import MemoryBackend
        >>> leases_of(MemoryBackend()).leases_shared
        False
    """
    if Capability.LEASES not in backend.capabilities:
        return None
    if not isinstance(backend, Leases):
        raise ConfigurationError(_broken(backend, Capability.LEASES))
    return backend


def transactional_publish_of(backend: Backend) -> TransactionalPublish | None:
    """The backend's :class:`TransactionalPublish` when it declares it, else ``None``.

    Raises:
        ConfigurationError: the backend declares the capability without implementing it.

    Example::

        >>> from livepanel import MemoryBackend
        >>> transactional_publish_of(MemoryBackend()) is None
        True
    """
    if Capability.TRANSACTIONAL_PUBLISH not in backend.capabilities:
        return None
    if not isinstance(backend, TransactionalPublish):
        raise ConfigurationError(_broken(backend, Capability.TRANSACTIONAL_PUBLISH))
    return backend


def _broken(backend: Backend, capability: Capability) -> str:
    missing = [name for name in _MEMBERS[capability] if not hasattr(backend, name)]
    return _undelivered(type(backend).__name__, capability, missing)


def _undelivered(name: str, capability: Capability, missing: list[str]) -> str:
    protocol = _PROTOCOLS[capability].__name__
    return (
        f"{name} declares {capability} but does not implement {protocol} "
        f"({', '.join(missing) or 'its members'}); implement them, or leave {capability} "
        f"out of {name}.capabilities"
    )
