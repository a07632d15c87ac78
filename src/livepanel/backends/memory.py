"""The in-process backend: a ring of recent events, one epoch per process."""

from __future__ import annotations

import dataclasses
import heapq
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from typing_extensions import override

from livepanel.backends.base import (
    AckSummary,
    Backend,
    Capability,
    Control,
    Deliver,
    Leases,
    ReaderReport,
    ReaderStatus,
    SharedReceipts,
    SingleUseClaims,
)
from livepanel.events import Event
from livepanel.protocol import make_id, parse_id
from livepanel.state import DEFAULT_STATE_LIMIT, StateFold, StateSnapshot

__all__ = ["InProcessClaims", "InProcessLeases", "MemoryBackend"]


class InProcessClaims:
    """Single-use claims held in this process's memory, each forgotten once it expires.

    Thread-safe and without I/O; ``clock`` is any monotonic clock in seconds.

    Example::

        >>> claims = InProcessClaims()
        >>> claims.claim("ticket:n1", ttl=30.0), claims.claim("ticket:n1", ttl=30.0)
        (True, False)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: set[str] = set()
        self._expiry: list[tuple[float, str]] = []  # a heap, to forget expired claims
        self._lock = threading.Lock()

    def claim(self, key: str, ttl: float) -> bool:
        """``True`` the first time ``key`` is claimed, ``False`` for the next ``ttl`` seconds."""
        now = self._clock()
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                self._held.discard(heapq.heappop(self._expiry)[1])
            if key in self._held:
                return False
            self._held.add(key)
            heapq.heappush(self._expiry, (now + ttl, key))
        return True


class InProcessLeases:
    """Leases held in this process's memory: one holder at a time among its tasks and loops.

    Thread-safe and without I/O; ``clock`` is any monotonic clock in seconds.

    Example::

        >>> leases = InProcessLeases()
        >>> leases.acquire("poller", "a", 10.0), leases.acquire("poller", "b", 10.0)
        (1, None)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, tuple[str, float]] = {}  # name -> (holder, expiry)
        self._tokens: dict[str, int] = {}  # name -> the last token given: never reused
        self._lock = threading.Lock()

    def acquire(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew ``name`` for ``holder``: its token, or ``None`` while another has it."""
        now = self._clock()
        with self._lock:
            current = self._held.get(name)
            if current is not None and current[0] != holder and current[1] > now:
                return None
            if current is None or current[0] != holder or current[1] <= now:
                self._tokens[name] = self._tokens.get(name, 0) + 1  # changes hands
            self._held[name] = (holder, now + ttl)
            return self._tokens[name]

    def release(self, name: str, holder: str) -> None:
        """Give ``name`` up if ``holder`` has it."""
        with self._lock:
            current = self._held.get(name)
            if current is not None and current[0] == holder:
                del self._held[name]


class MemoryBackend(Backend):
    """Keeps the last ``history`` events in memory, and the state folded from all of them.

    Ids are ``"<epoch>:<n>"`` with a fresh random epoch per instance, so a
    ``since`` from before a restart is recognised as another epoch. Events are
    delivered at once, on the publisher's thread: the broadcaster takes them
    to each event loop's connections from there.

    Its capabilities hold in this process only: single-use claims are not
    shared with other workers (``claims_shared`` is ``False``), and its reader,
    being the publisher itself, never trails; ack summaries are shared by the
    broadcasters of this process that use it; a lease excludes this process's
    other holders only (``leases_shared`` is ``False``). It keeps no worker presence:
    with one process, presence is that process's own connections.

    Example::

        Broadcaster(MemoryBackend(history=5000, state_limit=50_000))
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.SINGLE_USE_CLAIMS,
            Capability.READER_STATUS,
            Capability.SHARED_RECEIPTS,
            Capability.LEASES,
        }
    )
    claims_shared: ClassVar[bool] = False
    leases_shared: ClassVar[bool] = False

    def __init__(self, *, history: int = 1000, state_limit: int = DEFAULT_STATE_LIMIT) -> None:
        self.history_size = history
        self.epoch = secrets.token_hex(4)
        self._fold = StateFold(self.epoch, limit=state_limit)
        self._history: deque[Event] = deque(maxlen=history)
        self._seq = 0
        self._lock = threading.Lock()  # ids, history and delivery go in one order
        self._deliver: Deliver | None = None
        self._control: Control | None = None
        self._claims = InProcessClaims()
        self._receipts: dict[str, tuple[float, AckSummary]] = {}  # worker: (expires at, acks)
        self._leases = InProcessLeases()

    @property
    def start_id(self) -> str:
        """The id that marks the start of this epoch: ``"<epoch>:0"``."""
        return make_id(self.epoch, "0")

    @override
    async def start(self, deliver: Deliver, control: Control | None = None) -> str:
        with self._lock:
            self._deliver = deliver
            self._control = control
            return make_id(self.epoch, str(self._seq))

    @override
    async def stop(self) -> None:
        with self._lock:
            self._deliver = self._control = None

    @override
    async def send_control(self, message: dict[str, Any]) -> None:
        control = self._control  # one process: straight back
        if control is not None:
            control(message)

    @override
    def publish_nowait(self, event: Event) -> Event:
        with self._lock:
            self._seq += 1
            event = dataclasses.replace(event, id=make_id(self.epoch, str(self._seq)))
            self._history.append(event)
            self._fold.apply(event)
            if self._deliver is not None:
                self._deliver((event,))
        return event

    @override
    async def publish(self, event: Event) -> Event:
        return self.publish_nowait(event)

    @override
    async def replay(self, since: str) -> list[Event] | None:
        epoch, position = parse_id(since)
        if epoch != self.epoch or len(position) != 1:
            return None
        seq = position[0]
        with self._lock:
            last = self._seq
            first = last - len(self._history) + 1  # the oldest retained event's number
            if seq == last:
                return []  # the newest event: nothing missed, even when nothing is retained
            if seq > last or seq < first - 1 or (seq == first - 1 and seq != 0):
                return None  # unknown, or trimmed (the epoch's start only while nothing is)
            return list(self._history)[seq - first + 1 :]

    @override
    async def state(self) -> StateSnapshot:
        with self._lock:
            return self._fold.snapshot()

    @override
    def stats(self) -> dict[str, int]:
        return {"state_evicted": self._fold.evicted}

    @override
    def describe(self) -> str:
        return "memory://"

    # ------------------------------------------------------------------ capabilities

    async def claim_once(self, key: str, ttl: float) -> bool:
        """Claim ``key`` in this process for ``ttl`` seconds (:class:`SingleUseClaims`)."""
        return self._claims.claim(key, ttl)

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew lease ``name`` in this process (:class:`Leases`)."""
        return self._leases.acquire(name, holder, ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        """Give lease ``name`` up if ``holder`` has it (:class:`Leases`)."""
        self._leases.release(name, holder)

    async def reader_status(self, timeout: float = 2.0) -> ReaderReport:
        """Always up to date: events are delivered as they are published (:class:`ReaderStatus`)."""
        return {
            "reachable": True,
            "running": True,
            "waiting": False,
            "lagSeconds": 0.0,
            "idleSeconds": 0.0,
        }

    async def write_receipts(self, worker: str, acks: AckSummary, expiry: float) -> None:
        """Replace ``worker``'s ack summary for ``expiry`` seconds (:class:`SharedReceipts`)."""
        with self._lock:
            if acks:
                self._receipts[worker] = (time.monotonic() + expiry, list(acks))
            else:
                self._receipts.pop(worker, None)

    async def read_receipts(self) -> dict[str, AckSummary]:
        """Every ack summary that has not expired, by worker (:class:`SharedReceipts`)."""
        now = time.monotonic()
        with self._lock:
            for worker in [w for w, (until, _) in self._receipts.items() if until <= now]:
                del self._receipts[worker]
            return {worker: list(acks) for worker, (_, acks) in self._receipts.items()}


if TYPE_CHECKING:  # mypy holds the declared capabilities to their protocols
    _RECEIPTS: type[SharedReceipts] = MemoryBackend
    _CLAIMS: type[SingleUseClaims] = MemoryBackend
    _READER: type[ReaderStatus] = MemoryBackend
    _LEASES: type[Leases] = MemoryBackend
