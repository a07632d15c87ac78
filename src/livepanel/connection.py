"""One consumer of the stream: its outbox, filter and audiences, and its writer.

A :class:`Connection` is what belongs to one dashboard (or one
``Broadcaster.subscribe()`` consumer), and nothing else writes it:

* its :class:`~livepanel.outbox.Outbox` holds what waits to be sent, with the
  bounds, the slow-consumer policy and the replay hand-over (no I/O);
* the fan-out (:mod:`livepanel.hub`) offers it each live event with
  :meth:`Outbox.push <livepanel.outbox.Outbox.push>`, on the connection's own event
  loop; it never blocks and never waits on the client;
* the transport (the ASGI endpoint) queues its own frames with
  :meth:`Connection.push_control` and runs :meth:`Connection.write`, the
  writer, inside the connection's own task, so every ``send`` of the server
  runs in that task and its context.

It knows the fan-out only through :class:`Membership`, the small protocol
defined here, and never imports the hub or the broadcaster. How a connection
ends is a :class:`CloseReason`; the transport maps it to a close code at its
edge. See ``docs/concepts.md``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from livepanel.events import Event
from livepanel.outbox import (
    MAX_CONTROL_FRAMES,
    DeliveryCounters,
    Frame,
    Outbox,
    SlowConsumerPolicy,
)
from livepanel.protocol import TypeFilter, control_frame
from livepanel.receipts import AckMark

__all__ = [
    "ABANDON_AFTER",
    "MAX_CONTROL_FRAMES",
    "CloseReason",
    "Connection",
    "Frame",
    "Membership",
    "SlowConsumerPolicy",
]

logger = logging.getLogger("livepanel")

ABANDON_AFTER = 2.0
"""Seconds a closed connection's writer may still spend on the frame it is sending; then it
is cancelled (a client that stopped reading never lets it finish)."""

SendText = Callable[[str], Awaitable[object]]
"""Writes one text frame to the client: the transport's ``send`` of a ``websocket.send``."""


class CloseReason(enum.Enum):
    """Why a connection ended; the transport turns it into a close code.

    Example::

        >>> CloseReason.SLOW_CONSUMER.flushes_first
        False
    """

    CLIENT_LEFT = "client_left"
    """The client went away (or closed): nothing more to send."""
    GOING_AWAY = "going_away"
    """The server is going away without a restart in view (1001)."""
    SERVICE_RESTART = "service_restart"
    """The worker is shutting down, and says when to come back (1012)."""
    POLICY_VIOLATION = "policy_violation"
    """The client kept sending after ``rate_limited`` (1008)."""
    MESSAGE_TOO_BIG = "message_too_big"
    """A client frame exceeded ``max_message_size`` (1009)."""
    INTERNAL_ERROR = "internal_error"
    """A write failed for a reason other than a vanished client (1011)."""
    SLOW_CONSUMER = "slow_consumer"
    """The queue was full under ``slow_consumer="disconnect"`` (1013)."""
    REVOKED = "revoked"
    """``Broadcaster.disconnect()`` named it (its ``code``, 1008 by default)."""

    @property
    def flushes_first(self) -> bool:
        """Whether what is queued (pongs, ``rate_limited``) goes out before the close."""
        return self in _FLUSH_FIRST


_FLUSH_FIRST = frozenset({CloseReason.POLICY_VIOLATION, CloseReason.MESSAGE_TOO_BIG})


class Membership(Protocol):
    """What a connection needs from the fan-out it belongs to (one event loop's hub).

    :class:`~livepanel.hub.Hub` is the one in use; a test may pass its own.

    Example::

        class Alone:
            loop = asyncio.get_running_loop()

            def leave(self, conn): ...

            async def resubscribe(self, conn, types, since, state):
                conn.set_types(types)

        conn = Connection(Alone(), DeliveryCounters(), queue_size=10, policy="drop")
    """

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the connection lives on."""
        ...

    def leave(self, conn: Connection) -> None:
        """Take a closed connection out of the fan-out."""
        ...

    async def resubscribe(
        self, conn: Connection, types: tuple[str, ...], since: str | None, state: bool
    ) -> bool | None:
        """Replace ``conn``'s filter and hand it the replay or the state it asks for."""
        ...


class Connection:
    """The outbox, filter, audiences and writer of one consumer of the stream.

    Made by :meth:`Broadcaster.connection() <livepanel.Broadcaster.connection>`, on its loop.

    Args:
        membership: the fan-out of this loop (see :class:`Membership`).
        counters: the broadcaster's counters (delivered, dropped, slow disconnects).
        queue_size: how many live events may wait; what happens beyond is ``policy``.
        policy: ``"disconnect"`` (close with :attr:`CloseReason.SLOW_CONSUMER`),
            ``"drop"`` (lose the oldest live event) or ``"conflate"`` (replace a
            queued event of the same state entry, else as ``"disconnect"``).
        batch: pack every queued frame into one, newline-delimited (``?batch=1``).
        dashboard: a dashboard (counted, told ``resume_unavailable``), not a ``subscribe()``.
        user: who holds it, for revocation and per-user numbers.
        max_bytes: how many bytes of live and control frames may wait; beyond,
            the connection is closed as a slow consumer (a replay is not counted).
        audiences: the audience strings this connection belongs to; it receives an
            event whose audience shares one of them, or has none. ``None``: every event.
        last_event_id: the stream's newest event when it opened (``welcome.lastEventId``).
        acks: where the client's ``ack`` messages are recorded (receipts), or ``None``.

    Example, what a transport does once the handshake passed::

        async with broadcaster.connection(batch=False) as conn:
            conn.push_control(welcome)
            await conn.subscribe(["session.*"], since=last_id)
            reason = await conn.write(send_text, heartbeat_interval=25.0)
    """

    __slots__ = (
        "_abandon",
        "_counters",
        "_membership",
        "_on_close",
        "_waiter",
        "_writer",
        "acks",
        "audiences",
        "batch",
        "close_reason",
        "dashboard",
        "filter",
        "last_event_id",
        "last_sent",
        "loop",
        "outbox",
        "revoked_code",
        "transport",
        "user",
    )

    def __init__(
        self,
        membership: Membership,
        counters: DeliveryCounters,
        *,
        queue_size: int,
        policy: SlowConsumerPolicy,
        batch: bool = False,
        dashboard: bool = True,
        user: str | None = None,
        last_event_id: str = "",
        max_bytes: int = 16 * 2**20,
        audiences: frozenset[str] | None = None,
        transport: str = "websocket",
        acks: AckMark | None = None,
    ) -> None:
        self._membership = membership
        self._counters = counters
        self.loop = membership.loop
        self._waiter: asyncio.Future[None] | None = None
        self.outbox = Outbox(
            counters,
            queue_size=queue_size,
            policy=policy,
            max_bytes=max_bytes,
            on_overflow=self._too_slow,
        )
        self.filter = TypeFilter()
        self.batch = batch
        self.dashboard = dashboard
        self.user = user
        self.last_event_id = last_event_id  # the stream's newest event when it opened
        self.audiences = audiences  # None: sees every event
        self.transport = transport  # "websocket" or "sse", for the numbers
        self.acks = acks  # the newest event the client acknowledged (dashboards only)
        self.revoked_code: int | None = None
        self.close_reason: CloseReason | None = None
        self.last_sent = self.loop.time()
        self._writer: asyncio.Task[object] | None = None  # the task running write(), while it runs
        self._abandon: asyncio.TimerHandle | None = None  # armed once a close is decided
        self._on_close: Callable[[], None] | None = None

    # ------------------------------------------------------------------ fan-out side

    def push_control(self, text: str) -> None:
        """Queue a frame that is not a broadcast event (welcome, pong, error) and wake the writer.

        A client that makes the server queue more than ``MAX_CONTROL_FRAMES``
        of them, or more than ``max_bytes`` in all, without reading them is
        closed as a slow consumer.
        """
        if self.outbox.push_control(text):
            self.wake()

    def push_state(self, text: str) -> None:
        """Queue a ``state`` frame: in flight, as a replay is, until the writer takes it."""
        if self.outbox.push_state(text):
            self.wake()

    def _too_slow(self) -> None:
        self.close(CloseReason.SLOW_CONSUMER)

    @property
    def replaying(self) -> bool:
        """Whether events of the last replay, or the last state frame, are still waiting."""
        return self.outbox.replaying

    def close(self, reason: CloseReason) -> None:
        """Stop queueing; the writer returns ``reason`` (the first reason given wins).

        It leaves the fan-out and frees its queue at once (unless the reason
        flushes it first), even while its writer is stuck on a full socket; a
        writer still inside ``send`` :data:`ABANDON_AFTER` seconds later is cancelled.
        """
        if self.close_reason is None:
            self.close_reason = reason
            self.outbox.close()
            if not reason.flushes_first:
                self.outbox.discard()  # the client resumes with since: free its backlog now
            self._membership.leave(self)
            self.wake()
            if self._writer is not None:  # one timer per close, never one per frame
                self._abandon = self.loop.call_later(ABANDON_AFTER, self._give_up)
            if self._on_close is not None:  # once: close_reason is set from here
                self._on_close()

    def when_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the connection closes (now if it has): its slot goes back
        when the close is decided, not when a client that stopped reading lets it end."""
        if self.close_reason is not None:
            callback()
        else:
            self._on_close = callback

    def _give_up(self) -> None:
        """:data:`ABANDON_AFTER` seconds after the close: cancel a writer still sending."""
        self._abandon = None
        writer = self._writer
        if writer is not None and not writer.done():
            logger.info("livepanel: a closed connection's client is not reading; abandoned")
            self.outbox.discard()
            writer.cancel()

    def sees(self, event: Event) -> bool:
        """Whether this connection may receive ``event`` (its audience allows it)."""
        audience = event.audience
        return audience is None or self.audiences is None or not audience.isdisjoint(self.audiences)

    def revoke(self, code: int) -> None:
        """Close it because access was revoked; the transport closes with ``code``."""
        if self.close_reason is None:
            self.revoked_code = code
            self.close(CloseReason.REVOKED)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self.close_reason is not None

    def wake(self) -> None:
        """Wake the writer if it waits (the hub calls it once per round)."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ subscription

    async def subscribe(
        self, types: Iterable[str], since: str | None = None, state: bool = False
    ) -> bool | None:
        """Replace the type filter; with ``since``, replay what the client missed.

        Returns ``True`` when resumed, ``False`` when ``since`` is not retained
        (an ``error`` frame ``resume_unavailable`` is queued for dashboards,
        or, with ``state``, a ``state`` frame), ``None`` without ``since``.
        With ``state`` and no resumable ``since``, a ``state`` frame is queued
        first and every later event follows (see :mod:`livepanel.state`).
        """
        return await self._membership.resubscribe(self, tuple(types), since, state)

    def set_types(self, types: Sequence[str]) -> None:
        """Replace the type filter (events already queued stay)."""
        self.filter = TypeFilter(types)

    def hold(self, types: Sequence[str]) -> None:
        """Set the new filter and hold live events back until :meth:`release`."""
        self.filter = TypeFilter(types)
        self.outbox.hold()

    def release(
        self,
        since: str,
        replayed: list[Event] | None,
        text_of: Callable[[Event], str] = Event.to_json,
        *,
        unavailable: str | None = None,
    ) -> bool:
        """Queue the replay (every retained event after ``since``, or ``None``), then what
        was held; with ``unavailable`` and no replay, that error frame first. Returns
        whether it resumed (see :meth:`Outbox.release <livepanel.outbox.Outbox.release>`)."""
        if replayed is None and unavailable is not None and self.dashboard:
            self.outbox.push_control(unavailable)
        match = self.filter.matches
        resumed = self.outbox.release(
            since, replayed, keep=lambda e: match(e.type) and self.sees(e), text_of=text_of
        )
        self.wake()
        return resumed

    # ------------------------------------------------------------------ writer side

    async def _park(self) -> None:
        """Wait until the hub or a control frame wakes us."""
        waiter = self._waiter = self.loop.create_future()
        self.outbox.park()
        try:
            await waiter
        finally:
            self._waiter = None

    async def wait(self) -> None:
        """Return once something is queued or the connection is closed."""
        while not self.outbox and self.close_reason is None:
            await self._park()

    def take(self) -> list[Frame]:
        """Remove and return every queued frame."""
        return self.outbox.take()

    async def write(
        self,
        send: SendText,
        heartbeat_interval: float | None = None,
        *,
        encode: Callable[[list[Frame]], str] | None = None,
    ) -> CloseReason:
        """Drain the queue to ``send`` until the connection closes; return why it closed.

        Runs in the connection's own task: every ``send`` happens there. It
        wakes at most once per event-loop turn and writes everything queued
        meanwhile (one frame each, or one newline-delimited frame with
        ``batch``). After ``heartbeat_interval`` seconds without a frame it
        sends ``ping``. A write that fails with ``OSError`` means the client
        left; any other exception is logged and ends this connection alone
        with :attr:`CloseReason.INTERNAL_ERROR`. With ``encode``, each wake
        sends ``encode(frames)`` of everything queued, as one piece (an event
        stream's chunk). A ``send`` still running :data:`ABANDON_AFTER` seconds
        after the close is cancelled, with this coroutine's task.
        """
        loop = self.loop
        timer: asyncio.TimerHandle | None = None
        self._writer = asyncio.current_task()

        def heartbeat() -> None:
            nonlocal timer
            assert heartbeat_interval is not None
            idle = loop.time() - self.last_sent
            if idle >= heartbeat_interval - 0.01:
                self.push_control(control_frame("ping", {}))
                timer = loop.call_later(heartbeat_interval, heartbeat)
            else:
                timer = loop.call_later(heartbeat_interval - idle, heartbeat)

        if heartbeat_interval is not None:
            timer = loop.call_later(heartbeat_interval, heartbeat)
        counters = self._counters
        outbox = self.outbox
        pending = outbox.pending
        pop = outbox.pop
        try:
            while True:
                while not pending and self.close_reason is None:
                    waiter = self._waiter = loop.create_future()  # _park(), inlined: every wake
                    outbox.park()
                    try:
                        await waiter
                    finally:
                        self._waiter = None
                reason = self.close_reason
                if reason is not None and not (reason.flushes_first and pending):
                    return reason
                if encode is not None or self.batch:
                    controls = outbox.controls
                    frames = outbox.take()
                    if encode is not None:
                        await send(encode(frames))
                    elif len(frames) == 1:
                        await send(frames[0].text)
                    else:
                        await send("\n".join([f.text for f in frames]))
                    counters.delivered += len(frames) - controls
                else:
                    sent = 0
                    while pending:
                        if self.close_reason is not None and not self.close_reason.flushes_first:
                            break
                        frame = pop()
                        if frame.event is not None:
                            sent += 1
                        await send(frame.text)
                    counters.delivered += sent
                self.last_sent = loop.time()
        except OSError:
            self.close(CloseReason.CLIENT_LEFT)
            return CloseReason.CLIENT_LEFT
        except Exception as exc:
            logger.error(
                "livepanel: writing to a connection failed (%s); closing it with 1011",
                type(exc).__name__,
            )
            self.close(CloseReason.INTERNAL_ERROR)
            return CloseReason.INTERNAL_ERROR
        finally:
            self._writer = None
            if timer is not None:
                timer.cancel()
            if self._abandon is not None:
                self._abandon.cancel()
                self._abandon = None

    async def next_event(self) -> Event | None:
        """The next event for an in-process consumer; ``None`` once closed."""
        outbox = self.outbox
        while True:
            if self.close_reason is not None:
                return None
            if outbox:
                frame = outbox.pop()
                if frame.event is not None:
                    self._counters.delivered += 1
                    return frame.event
                continue
            await self.wait()
