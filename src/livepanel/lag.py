"""How far each dashboard trails what it was sent: its lag, from its acks.

A connection whose client acks (``livepanel.js``, the Python client) has a
:class:`SentLog`: the writer records each write it makes to the client (how
many events, the newest one's position, when) and the client's acks trim it.
What is left are the writes the client has not acknowledged yet, so the lag
is read from it when asked, never computed on the hot path:

* ``lag_events``: how many events were sent to the connection after the one
  it last acknowledged;
* ``lag_seconds``: how long it has been behind: now minus the time the first
  event after its last ack was sent (``0.0`` when everything sent is acked).

A connection that has not acknowledged anything yet (a Server-Sent Events
stream, a client that never acks) has no reading (``None``) and never counts
as behind. Both readings are upper bounds: an ack of an event in the middle
of one write counts the rest of that write as unacknowledged, and a client
more than :data:`RING` writes behind has its newest writes merged into one.
See ``docs/staying-live.md``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["DEFAULT_LAG_LIMIT", "RING", "LagReading", "LagSummary", "SentLog", "summarize"]

RING = 64
"""Writes a :class:`SentLog` keeps apart; beyond, the newest ones are merged."""
DEFAULT_LAG_LIMIT = 30.0
"""Seconds every acking dashboard of a worker may stay behind before its health fails."""
WORST = 20
"""How many of the connections furthest behind ``Broadcaster.stats()`` lists."""

Position = tuple[str, tuple[int, ...]]


_UNMADE: list[Any] = []  # a SentLog's rings before its first write (shared, always empty)


class SentLog:
    """The writes to one connection that its client has not acknowledged yet.

    Owned by the connection's :class:`~livepanel.receipts.AckMark`: the writer
    calls :meth:`wrote` once per write (never once per event), the mark calls
    :meth:`acked` when the client's ack moves it. Both run on the connection's
    event loop; :meth:`lag` may be read from any thread. Memory is fixed: three
    lists of :data:`RING` slots.

    Example::

        >>> log = SentLog()
        >>> log.wrote(3, ("e", (3,)), 10.0)
        >>> log.lag(12.0) is None  # never acknowledged anything: no reading
        True
        >>> log.acked(("e", (1,)))
        >>> log.lag(12.0)
        (3, 2.0)
        >>> log.acked(("e", (3,)))
        >>> log.lag(12.0)
        (0, 0.0)
    """

    __slots__ = (
        "_ack",
        "_count",
        "_first",
        "_positions",
        "_sent_at",
        "_totals",
        "acked_events",
        "acking",
        "sent",
    )

    def __init__(self) -> None:
        # made on the first write recorded (a connection that never acks has none): until
        # then all three are the same empty list, never written to
        self._positions: list[Position | None] = _UNMADE  # each write's newest event
        self._totals: list[int] = _UNMADE  # events sent in all once that write was made
        self._sent_at: list[float] = _UNMADE  # when it was made (the first of merged ones)
        self._first = 0  # the oldest unacknowledged write's slot
        self._count = 0  # unacknowledged writes kept
        self._ack: Position | None = None  # the newest position acknowledged
        # whether the client acknowledged anything yet: until then the writer records
        # nothing (a client that never acks has no lag, and costs no record per write)
        self.acking = False
        self.sent = 0  # events written in all
        self.acked_events = 0  # events written up to the newest acknowledged write

    def wrote(self, events: int, position: Position | None, now: float) -> None:
        """The writer sent ``events`` events, the newest at ``position``, at ``now``.

        O(1): a write the client acknowledged already (its ack overtook the end of
        the ``send``) is counted as acknowledged; when :data:`RING` writes wait, the
        newest slot takes this one too.
        """
        self.sent += events
        ack = self._ack
        if position is None:
            return
        if ack is not None and position[0] == ack[0] and position[1] <= ack[1]:
            if self._count == 0:
                self.acked_events = self.sent
            return
        count = self._count
        if not self._positions:
            self._positions, self._totals, self._sent_at = [None] * RING, [0] * RING, [0.0] * RING
        if count == RING:
            slot = (self._first + count - 1) % RING  # merged: keeps the first one's time
        else:
            slot = (self._first + count) % RING
            self._sent_at[slot] = now
            self._count = count + 1
        self._positions[slot] = position
        self._totals[slot] = self.sent

    def acked(self, position: Position) -> None:
        """The client acknowledged the event at ``position``: every write up to the newest
        one it covers is acknowledged (a write's events arrive in the order sent)."""
        self._ack = position
        self.acking = True
        epoch, where = position
        first, count = self._first, self._count
        for back in range(count - 1, -1, -1):
            slot = (first + back) % RING
            written = self._positions[slot]
            if written is not None and written[0] == epoch and written[1] <= where:
                self.acked_events = self._totals[slot]
                self._first = (slot + 1) % RING
                self._count = count - back - 1
                return

    def lag(self, now: float) -> tuple[int, float] | None:
        """``(lag_events, lag_seconds)`` at ``now`` (the writer's clock), or ``None`` when
        the client has acknowledged nothing on this connection."""
        if self._ack is None:
            return None
        first, count = self._first, self._count  # read once: the writer may move them
        if count == 0:
            return (0, 0.0)
        events = max(0, self.sent - self.acked_events)
        return (events, max(0.0, now - self._sent_at[first % RING]))


@dataclasses.dataclass(frozen=True)
class LagReading:
    """One acking connection's lag, as ``Broadcaster.stats()`` lists it.

    Example::

        >>> LagReading("alice", "websocket", 3, 1.5).behind
        True
    """

    user: str
    """Who holds the connection (``""``: anonymous)."""
    transport: str
    """``"websocket"`` or ``"sse"``."""
    events: int
    """Events sent after the one it last acknowledged."""
    seconds: float
    """How long it has been behind (``0.0`` when up to date)."""

    @property
    def behind(self) -> bool:
        """Whether something sent to it is not acknowledged yet."""
        return self.events > 0

    def as_dict(self) -> dict[str, object]:
        """The reading as ``stats()["lag"]["connections"]`` lists it."""
        return {
            "user": self.user,
            "transport": self.transport,
            "lag_events": self.events,
            "lag_seconds": round(self.seconds, 3),
        }


@dataclasses.dataclass(frozen=True)
class LagSummary:
    """The lag of one process's acking connections, summed up.

    Example::

        >>> summary = summarize([LagReading("a", "websocket", 0, 0.0)], connections=2)
        >>> summary.acking, summary.lagging, summary.stuck(30.0)
        (1, 0, False)
    """

    connections: int
    """Live dashboard connections (acking or not)."""
    readings: tuple[LagReading, ...]
    """Every acking connection's reading, the furthest behind first."""

    @property
    def acking(self) -> int:
        """Connections that have acknowledged something: the ones with a reading."""
        return len(self.readings)

    @property
    def lagging(self) -> int:
        """Acking connections with something sent and not acknowledged yet."""
        return sum(1 for r in self.readings if r.behind)

    def behind_for(self, limit: float) -> int:
        """Acking connections behind for more than ``limit`` seconds."""
        return sum(1 for r in self.readings if r.seconds > limit)

    def stuck(self, limit: float) -> bool:
        """Whether there are acking connections and every one of them has been behind
        for more than ``limit`` seconds: events flow and none is acknowledged."""
        return bool(self.readings) and self.behind_for(limit) == len(self.readings)

    def stats(self) -> dict[str, object]:
        """What ``Broadcaster.stats()["lag"]`` holds (see ``docs/staying-live.md``)."""
        seconds = sorted(r.seconds for r in self.readings)
        events = sorted(r.events for r in self.readings)
        return {
            "acking": self.acking,
            "not_acking": max(0, self.connections - self.acking),
            "lagging": self.lagging,
            "max_seconds": round(seconds[-1], 3) if seconds else 0.0,
            "p50_seconds": round(_percentile(seconds, 0.5), 3),
            "p99_seconds": round(_percentile(seconds, 0.99), 3),
            "max_events": events[-1] if events else 0,
            "p50_events": _percentile(events, 0.5),
            "p99_events": _percentile(events, 0.99),
            "connections": [r.as_dict() for r in self.readings[:WORST]],
        }


def _percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile of ascending values (0 when there are none)."""
    if not ordered:
        return 0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarize(readings: Iterable[LagReading], *, connections: int) -> LagSummary:
    """The :class:`LagSummary` of ``readings`` among ``connections`` live dashboards.

    Example::

        >>> summarize([LagReading("a", "websocket", 2, 40.0)], connections=1).stuck(30.0)
        True
    """
    ordered = sorted(readings, key=lambda r: (r.seconds, r.events), reverse=True)
    return LagSummary(connections, tuple(ordered))
