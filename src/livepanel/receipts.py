"""Acks and receipts: which dashboards have processed an event, on every worker.

A dashboard's client acks the newest event id its handlers have run for
(``{"type": "ack", "payload": {"id": ...}}``, coalesced to a few per second).
Each connection keeps the newest id it acknowledged in an :class:`AckMark`;
an ack of an id counts for every event before it on that connection. The
:class:`ReceiptBook` of a broadcaster holds the marks of its live connections
and answers :meth:`Broadcaster.receipts() <livepanel.Broadcaster.receipts>`.

Across workers it uses the backend's
:class:`~livepanel.backends.base.SharedReceipts`: each worker writes a small
summary of its marks (one row per user and acked id, with a count) at most
every :data:`FLUSH_INTERVAL` seconds while acks change, and rewrites it every
:data:`KEEPALIVE` seconds so that it expires :data:`EXPIRY` seconds after its
worker died. An ack costs a comparison in memory; a query costs one backend
read of every worker's summary. See ``docs/staying-live.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import secrets
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from livepanel.backends.base import AckSummary, SharedReceipts
from livepanel.errors import BackendUnavailable
from livepanel.lag import LagReading, LagSummary, SentLog, summarize
from livepanel.protocol import parse_id

__all__ = [
    "EXPIRY",
    "FLUSH_INTERVAL",
    "KEEPALIVE",
    "POLL_INTERVAL",
    "AckMark",
    "Receipt",
    "ReceiptBook",
    "check_confirm",
    "count_receipts",
]

logger = logging.getLogger("livepanel")

T = TypeVar("T")


class CallBackend(Protocol):
    """Runs a backend call on the backend's own loop (``Broadcaster.call_backend``)."""

    def __call__(self, call: Callable[[], Awaitable[T]]) -> Awaitable[T]: ...


FLUSH_INTERVAL = 0.2
"""Seconds between two writes of this worker's ack summary, at least."""
KEEPALIVE = 5.0
"""Seconds after which an unchanged summary is written again, so it does not expire."""
EXPIRY = 15.0
"""Seconds after which a worker's summary stops counting unless written again."""
POLL_INTERVAL = 0.1
"""Seconds between two looks at the receipts while ``apublish(confirm=...)`` waits."""


@dataclasses.dataclass(frozen=True)
class Receipt:
    """Who has acknowledged an event: the users and how many connections, on every worker.

    Example::

        receipt = await broadcaster.receipts(event.id)
        if "alice" in receipt.users:
            ...  # one of alice's dashboards has processed the event (or a later one)
    """

    event_id: str
    """The event asked about."""
    users: frozenset[str]
    """The names of the users whose connections acknowledged it (anonymous ones are not named)."""
    connections: int
    """How many live connections acknowledged it."""


def count_receipts(event_id: str, acks: Iterable[tuple[str, str, int]]) -> Receipt:
    """The receipt of ``event_id`` from ``(user, acked id, connections)`` rows.

    A row counts when its id is ``event_id`` or a later one of the same epoch.

    Raises:
        ValueError: ``event_id`` is not an id livepanel issued.

    Example::

        >>> r = count_receipts("e:2", [("alice", "e:3", 1), ("bob", "e:1", 2), ("", "e:2", 1)])
        >>> sorted(r.users), r.connections
        (['alice'], 2)
    """
    epoch, position = parse_id(event_id)
    users: set[str] = set()
    connections = 0
    for user, acked, count in acks:
        try:
            acked_epoch, acked_position = parse_id(acked)
        except ValueError:  # a summary from a newer or broken worker: not a receipt
            continue
        if acked_epoch == epoch and acked_position >= position and count > 0:
            connections += count
            if user:
                users.add(user)
    return Receipt(event_id, frozenset(users), connections)


def check_confirm(confirm: object, within: object) -> float:
    """Check ``apublish``'s ``confirm`` and ``within``; returns ``within`` as seconds.

    Raises:
        ValueError: ``confirm`` is not an integer >= 0, or ``within`` not seconds >= 0.

    Example::

        >>> check_confirm(2, 5)
        5.0
    """
    if not isinstance(confirm, int) or isinstance(confirm, bool) or confirm < 0:
        raise ValueError(f"apublish: confirm must be an integer >= 0, not {confirm!r}")
    if isinstance(within, bool) or not isinstance(within, (int, float)) or not within >= 0:
        raise ValueError(f"apublish: within must be a number of seconds >= 0, not {within!r}")
    return float(within)


class AckMark:
    """The newest event one connection acknowledged; owned by its :class:`ReceiptBook`.

    The transport records each client ``ack`` here. An id from another epoch is
    ignored, an older one than the mark keeps the mark, and one beyond the newest
    event this process has delivered is taken as that event: a client cannot
    acknowledge what does not exist yet. Its :class:`~livepanel.lag.SentLog`
    (``sent``) holds what was written to the client since, for its lag.

    Example::

        mark = book.open("alice")
        mark.record("3f9a1c2e:7")
        mark.id  # "3f9a1c2e:7"
    """

    __slots__ = ("_book", "_position", "id", "sent", "transport", "user")

    def __init__(self, book: ReceiptBook, user: str | None, transport: str = "websocket") -> None:
        self._book = book
        self.user = user or ""
        self.transport = transport
        self.id: str | None = None  # the newest acknowledged id
        self._position: tuple[str, tuple[int, ...]] | None = None
        self.sent = SentLog()  # the writer records its writes there

    def record(self, event_id: str) -> bool:
        """Take the client's ack of ``event_id``; ``True`` when the mark moved."""
        try:
            epoch, position = parse_id(event_id)
            newest = self._book.newest()
            newest_epoch, newest_position = parse_id(newest)
        except ValueError:
            return False
        if epoch != newest_epoch:
            return False
        if position > newest_position:
            event_id, position = newest, newest_position
        if self._position is not None and position <= self._position[1]:
            return False
        self._position = (epoch, position)
        self.id = event_id
        self.sent.acked(self._position)
        self._book.changed()
        return True


class ReceiptBook:
    """The ack marks of one broadcaster's live connections, shared with the other workers.

    Args:
        shared: the backend's shared receipts, or ``None`` (this process only).
        call_backend: runs a backend call on the backend's loop
            (:meth:`Broadcaster.call_backend <livepanel.Broadcaster.call_backend>`).
        newest: the newest event id delivered in this process.

    Example::

        book = ReceiptBook(shared_receipts_of(backend), broadcaster.call_backend, lambda: head)
        receipt = await book.receipt(event_id)
    """

    def __init__(
        self,
        shared: SharedReceipts | None,
        call_backend: CallBackend,
        newest: Callable[[], str],
    ) -> None:
        self.shared = shared
        self.worker = secrets.token_hex(6)  # names this process's summary
        self.newest = newest
        self._call = call_backend
        self._marks: set[AckMark] = set()
        self._lock = threading.Lock()  # connections on several loops open and close marks
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def open(self, user: str | None, transport: str = "websocket") -> AckMark:
        """A mark for a new connection of ``user`` over ``transport``."""
        mark = AckMark(self, user, transport)
        with self._lock:
            self._marks.add(mark)
        return mark

    def close(self, mark: AckMark | None) -> None:
        """Forget a closed connection's mark: it no longer counts (``None``: nothing to do)."""
        if mark is None:
            return
        with self._lock:
            self._marks.discard(mark)
        if mark.id is not None:
            self.changed()

    def summary(self) -> AckSummary:
        """This process's acks: ``[(user, acked id, connections), ...]``."""
        with self._lock:
            counts = Counter((m.user, m.id) for m in self._marks if m.id is not None)
        return [(user, acked, n) for (user, acked), n in counts.items() if acked is not None]

    def lag(self, now: float) -> LagSummary:
        """The lag of every live connection that has acknowledged something, at ``now``
        (``loop.time()``: the writers' clock)."""
        with self._lock:
            marks = list(self._marks)
        readings = []
        for mark in marks:
            lag = mark.sent.lag(now)
            if lag is not None:
                readings.append(LagReading(mark.user, mark.transport, lag[0], lag[1]))
        return summarize(readings, connections=len(marks))

    def changed(self) -> None:
        """A mark moved or left: write the summary soon (from a running event loop)."""
        if self.shared is None:
            return
        self._dirty = True
        task = self._task
        if task is None or task.done() or task.get_loop().is_closed():
            with contextlib.suppress(RuntimeError):  # no running loop: the next change flushes
                self._task = asyncio.get_running_loop().create_task(self._flush_while_acked())

    async def _flush_while_acked(self) -> None:
        """Write the summary when it changed (at most every FLUSH_INTERVAL s) and every
        KEEPALIVE s; end once an empty summary is written."""
        shared = self.shared
        assert shared is not None
        loop = asyncio.get_running_loop()
        written = float("-inf")
        while True:
            summary = self.summary()
            if self._dirty or loop.time() - written >= KEEPALIVE:
                self._dirty = False
                try:
                    await self._call(
                        functools.partial(shared.write_receipts, self.worker, summary, EXPIRY)
                    )
                    written = loop.time()
                except BackendUnavailable as exc:
                    self._dirty = True
                    logger.debug("livepanel: acks not shared yet (%s)", type(exc).__name__)
                if not summary and not self._dirty:
                    return
            await asyncio.sleep(FLUSH_INTERVAL)

    async def receipt(self, event_id: str) -> Receipt:
        """Who acknowledged ``event_id``: this process's marks, and every other worker's
        summary when the backend shares them.

        Raises:
            ValueError: ``event_id`` is not an id livepanel issued.
            BackendUnavailable: the other workers' summaries cannot be read.
        """
        parse_id(event_id)
        rows = self.summary()
        shared = self.shared
        if shared is not None:
            others = await self._call(shared.read_receipts)
            for worker, acks in others.items():
                if worker != self.worker:  # our own summary may be older than our marks
                    rows.extend(acks)
        return count_receipts(event_id, rows)

    async def wait(self, event_id: str, confirm: int, within: float) -> Receipt:
        """The receipt of ``event_id`` once ``confirm`` connections acknowledged it, or
        after ``within`` seconds, whichever comes first.

        A failed read of the other workers counts this process's acks only.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                receipt = await self.receipt(event_id)
            except BackendUnavailable:
                receipt = count_receipts(event_id, self.summary())
            left = deadline - loop.time()
            if receipt.connections >= confirm or left <= 0:
                return receipt
            await asyncio.sleep(min(POLL_INTERVAL, left))

    def stop(self) -> None:
        """Stop writing the summary (the broadcaster closes)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its loop is closed already
                task.cancel()
