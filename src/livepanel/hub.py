"""The fan-out of one event loop, and the rounds that wake its writers.

The broadcaster keeps one :class:`Hub` per event loop that has connections.
New events reach it through :meth:`Hub.post` (from any thread, in stream
order); it fans them out on its own loop, offering each frame to every
matching :class:`~livepanel.connection.Connection` of the loop, and wakes the
writers whose queue got something in rounds (:class:`Waker`), so that each
writer writes what queued meanwhile in one go. See ``docs/concepts.md``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from livepanel.census import Census
from livepanel.connection import CloseReason, Connection
from livepanel.outbox import Frame
from livepanel.writer import Pump

__all__ = ["BATCH_LINGER_MAX", "WAKE_AFTER_TURNS", "WAKE_CHUNK", "Hub", "Waker"]

T = TypeVar("T")

BATCH_LINGER_MAX = 0.010
"""Seconds a batching connection's events may wait for company in a frame, at most."""
WAKE_AFTER_TURNS = 2
"""Event-loop turns a writer's first queued event waits for company before it is written (or
its writer woken): a publisher that publishes every turn has about three events in each
round, so that each connection's bookkeeping is paid once for them; when nothing else runs,
two turns take microseconds."""
WAKE_CHUNK = 256
"""Writers woken per event-loop turn, at most: fewer than CPython's young-generation
garbage-collection threshold (700), so that a round's wakes never start a collection."""


class Flushable(Protocol):
    """What a round calls: a connection's :attr:`~livepanel.connection.Connection.flusher`,
    or the connection itself when it has none."""

    def flush(self, now: float, pump: Pump) -> None:
        """Write what queued at ``now`` (with the round's ``pump``), or wake the writer."""


Resubscribe = Callable[[Connection, tuple[str, ...], "str | None", bool], Awaitable["bool | None"]]
"""The broadcaster's answer to a connection's ``subscribe``: its replay or state."""


class Hub:
    """The connections of one event loop, and the inbox through which events reach them.

    The backend may deliver on any thread; :meth:`post` puts the frames in the
    inbox (in stream order: the broadcaster posts under its lock) and the hub
    fans them out on its own loop, at once when already there. Writers whose
    queue got something are woken once per loop turn; batching writers linger
    as long as the previous batching round took (at most ``BATCH_LINGER_MAX``),
    so that under load the events published meanwhile share one frame.

    Args:
        loop: the event loop it serves.
        last_id: the stream's newest event id when it was created.
        census: told when a dashboard joins or leaves.
        resubscribe: what a connection's ``subscribe`` calls (the broadcaster's).

    Example, what the broadcaster does for each loop::

        hub = Hub(asyncio.get_running_loop(), head_id, census, resubscribe)
        hub.join(conn)
        hub.post(frames)  # under the broadcaster's lock, from any thread
        hub.kick()  # fan out now on this thread, else soon on the hub's loop
    """

    __slots__ = (
        "_batchers",
        "_fanning_out",
        "_left",
        "_resubscribe",
        "_scheduled",
        "_writers",
        "census",
        "connections",
        "groups",
        "inbox",
        "last_id",
        "loop",
        "thread",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        last_id: str,
        census: Census,
        resubscribe: Resubscribe,
    ) -> None:
        self.loop = loop
        self.thread = threading.get_ident()
        self.census = census
        self._resubscribe = resubscribe
        self.connections: list[Connection] = []
        # the same connections by their audiences (None: sees everything)
        self.groups: dict[frozenset[str] | None, list[Connection]] = {}
        self.inbox: deque[list[Frame]] = deque()
        self.last_id = last_id  # the newest event fanned out here: welcome's lastEventId
        self._scheduled = False
        self._writers = Waker(loop, WAKE_AFTER_TURNS)
        self._batchers = Waker(loop, WAKE_AFTER_TURNS, BATCH_LINGER_MAX)
        self._fanning_out = False
        self._left = False  # a connection closed during a fan-out: prune after it

    def join(self, conn: Connection) -> None:
        """Add ``conn`` to the fan-out of this loop."""
        self.connections.append(conn)
        self.groups.setdefault(conn.audiences, []).append(conn)
        if conn.dashboard:
            self.census.joined(conn.user, conn.transport)

    async def resubscribe(
        self, conn: Connection, types: tuple[str, ...], since: str | None, state: bool
    ) -> bool | None:
        """``conn``'s new filter and, with ``since``, its replay; with ``state``, its
        ``state`` frame (:class:`~livepanel.connection.Membership`)."""
        return await self._resubscribe(conn, types, since, state)

    def leave(self, conn: Connection) -> None:
        """Take ``conn`` out of the fan-out (it closed); safe in the middle of a fan-out."""
        if self._fanning_out:
            self._left = True
        else:
            try:
                self.connections.remove(conn)
            except ValueError:
                return
            self._ungroup(conn)
        if conn.dashboard:
            self.census.left(conn.user, conn.transport)

    def forget(self) -> list[Connection]:
        """Drop every connection (the loop closed and they went with it); return them."""
        gone, self.connections, self.groups = self.connections, [], {}
        return gone

    def revoke(self, user: str | None, audiences: frozenset[str], code: int) -> int:
        """Close the dashboards of ``user`` or of one of ``audiences`` with ``code`` (any thread).

        Returns how many it closes.
        """

        def named(conn: Connection) -> bool:
            if conn.closed or not conn.dashboard:
                return False
            if user is not None and conn.user == user:
                return True
            return (
                bool(audiences)
                and conn.audiences is not None
                and not audiences.isdisjoint(conn.audiences)
            )

        matching = [conn for conn in list(self.connections) if named(conn)]
        for conn in matching:
            self._on_loop(conn.revoke, code)
        return len(matching)

    def close_all(self, reason: CloseReason) -> None:
        """Close every connection of this loop with ``reason`` (any thread)."""
        for conn in list(self.connections):
            self._on_loop(conn.close, reason)

    def _on_loop(self, call: Callable[[T], None], arg: T) -> None:
        if threading.get_ident() == self.thread:
            call(arg)
        else:
            try:
                self.loop.call_soon_threadsafe(call, arg)
            except RuntimeError:
                pass  # its loop closed: so did the connection

    def _ungroup(self, conn: Connection) -> None:
        group = self.groups.get(conn.audiences)
        if group is not None and conn in group:
            group.remove(conn)
            if not group:
                del self.groups[conn.audiences]

    def post(self, frames: list[Frame]) -> None:
        """Queue new events for this loop (the caller holds the broadcaster's lock)."""
        self.inbox.append(frames)

    def kick(self) -> bool:
        """Fan out what the inbox holds: now on our own thread, else soon on our loop.

        Returns ``False`` when our loop is closed (the hub is dead).
        """
        if threading.get_ident() == self.thread:
            self.fan_out()
        elif not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self.fan_out)
            except RuntimeError:  # the loop closed: its connections are gone with it
                return False
        return True

    def fan_out(self) -> None:
        """Offer every frame of the inbox to every matching connection of this loop."""
        self._scheduled = False  # first: a post racing us schedules another fan-out
        self._batchers.events += 1  # the publisher is still publishing: keep lingering
        inbox = self.inbox
        connections = self.connections
        # the rounds' lists themselves: an append per connection, no call of ours
        writers = self._writers.due.append
        batchers = self._batchers.due.append
        self._fanning_out = True
        try:
            while inbox:
                frames = inbox.popleft()
                for frame in frames:
                    event = frame.event
                    assert event is not None  # live frames carry events
                    kind = event.type
                    if event.audience is None:
                        for conn in connections:
                            if (conn.everything or conn.filter.matches(kind)) and conn.outbox.push(
                                frame
                            ):
                                (batchers if conn.batch else writers)(conn.flusher or conn)
                        continue
                    # one set intersection per group of connections with the same audiences
                    for audiences, group in self.groups.items():
                        if audiences is None or not event.audience.isdisjoint(audiences):
                            for conn in group:
                                if (
                                    conn.everything or conn.filter.matches(kind)
                                ) and conn.outbox.push(frame):
                                    (batchers if conn.batch else writers)(conn.flusher or conn)
                self.last_id = frames[-1].event.id or self.last_id  # type: ignore[union-attr]
        finally:
            self._fanning_out = False
            self._writers.schedule()
            self._batchers.schedule()
        if self._left:
            self._left = False
            self.connections = [c for c in connections if not c.closed]
            for conn in connections:
                if conn.closed:
                    self._ungroup(conn)


class Waker:
    """Wakes a loop's writers in rounds, so that each writer writes what queued meanwhile.

    A round starts ``turns`` event-loop turns after the first event queued for
    it, and, with a ``cap``, no sooner than the previous round took to write
    (``cap`` seconds once a round takes a tenth of that). Under no load that is
    at once; under load each writer sends the events published meanwhile in one go (in one frame
    with ``?batch=1``), paying for one wake instead of one per event, while a
    publisher that publishes every turn is never more than a few events ahead.
    A lingering round starts early once a whole turn passed without a new
    event: the publisher stopped, and waiting longer would only add latency.

    A round wakes at most ``WAKE_CHUNK`` writers per turn, the rest on the next
    turns: each wake allocates a handle that lives until the writer runs, and
    more than CPython's young-generation threshold (700) at once would start a
    garbage collection on every round, which pushes long-lived objects towards
    a full collection that stalls the whole loop.

    Example::

        writers = Waker(asyncio.get_running_loop(), turns=WAKE_AFTER_TURNS)
        writers.add(conn.flusher or conn)  # its flush(now, pump) runs with the next round
    """

    __slots__ = (
        "_began",
        "_handle",
        "_left",
        "_linger",
        "_next",
        "_pump",
        "_waking",
        "cap",
        "due",
        "events",
        "loop",
        "turns",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, turns: int, cap: float = 0.0) -> None:
        self.loop = loop
        self.turns = turns
        self.cap = cap
        self.due: list[Flushable] = []  # writers for the next round (append, then schedule())
        self._waking: list[Flushable] = []  # the round being woken, WAKE_CHUNK per turn
        self._pump = Pump()  # runs the sends of every writer of this loop's rounds
        self._next = 0  # the first writer of _waking not woken yet
        # a round is scheduled (a TimerHandle while it lingers) or being woken
        self._handle: asyncio.Handle | None = None
        self._left = 0  # turns still to wait
        self._linger = 0.0  # seconds: how long the last round took, capped
        self._began = 0.0  # when the round being woken began
        self.events = 0  # fan-outs on this loop so far (the hub counts them)

    def add(self, writer: Flushable) -> None:
        """Flush ``writer`` with the next round."""
        self.due.append(writer)
        self.schedule()

    def schedule(self) -> None:
        """Make sure a round comes for the writers appended to :attr:`due` directly."""
        if self.due and self._handle is None:
            self._schedule()

    def _schedule(self) -> None:
        self._left = self.turns
        if self._linger:
            self._handle = self.loop.call_later(self._linger, self._tick)
            self.loop.call_soon(self._watch, None)
        else:
            self._handle = self.loop.call_soon(self._tick)

    def _watch(self, seen: int | None) -> None:
        """While a round lingers: start it at once after a whole turn without a new event.

        Lingering gathers the events of a publisher that keeps publishing; once it
        stops (the end of a burst, or a steady pace slower than a round), waiting
        longer would only add latency.
        """
        lingering = self._handle
        if not isinstance(lingering, asyncio.TimerHandle):
            return  # the round began (its linger ran out)
        if seen is None or self.events != seen:
            self.loop.call_soon(self._watch, self.events)  # compare after the next turn
            return
        lingering.cancel()
        self._tick()

    def _tick(self) -> None:
        if self._left:
            self._left -= 1
            self._handle = self.loop.call_soon(self._tick)
            return
        if not self._waking:  # a round begins: the writers due now; later ones wait for the next
            self._waking, self.due, self._next = self.due, [], 0
            self._began = self.loop.time()
        waking, start = self._waking, self._next
        end = min(start + WAKE_CHUNK, len(waking))
        now = self.loop.time()  # one reading for the chunk's writes: when they were sent
        pump = self._pump
        for index in range(start, end):
            waking[index].flush(now, pump)
        if end < len(waking):
            self._next = end
            self._handle = self.loop.call_soon(self._tick)
            return
        self._waking = []
        pump.forget()
        if self.cap:  # after these writers wrote: the round's length, then the next round
            self._handle = self.loop.call_soon(self._measure, self._began)
        else:
            self._handle = None
            if self.due:
                self._schedule()

    def _measure(self, began: float) -> None:
        took = self.loop.time() - began
        # a round that took a tenth of the cap means load: the next ones gather a full cap's
        # worth of events, so that each writer's wake (a task switch) carries many of them
        self._linger = self.cap if took > self.cap / 10 else took
        self._handle = None  # writers that joined meanwhile linger as long as just measured
        if self.due:
            self._schedule()
