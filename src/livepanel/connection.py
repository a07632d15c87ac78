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
import contextvars
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol

from livepanel.close_reason import CloseReason
from livepanel.events import Event
from livepanel.outbox import (
    MAX_CONTROL_FRAMES,
    DeliveryCounters,
    Frame,
    Outbox,
    SlowConsumerPolicy,
)
from livepanel.receipts import AckMark
from livepanel.type_filter import shared_filter
from livepanel.writer import AsgiSend, Pump, SendText, Writer, start_task

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
        "_context",
        "_counters",
        "_membership",
        "_on_close",
        "_started",
        "_writer",
        "abandoned",
        "acks",
        "audiences",
        "batch",
        "close_reason",
        "dashboard",
        "everything",
        "filter",
        "flusher",
        "last_event_id",
        "last_sent",
        "loop",
        "outbox",
        "revoked_code",
        "transport",
        "user",
        "waiter",
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
        self.waiter: asyncio.Future[None] | None = None  # while the writer waits
        self.outbox = Outbox(
            counters,
            queue_size=queue_size,
            policy=policy,
            max_bytes=max_bytes,
            on_overflow=self._too_slow,
        )
        self._filter_by(("*",))
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
        self.abandoned = False  # its writer was cancelled, still sending after the close
        self._on_close: Callable[[], None] | None = None
        # what the hub's round calls flush(now, pump) on, while a writer can write as its
        # task; else the round calls this connection's (which wakes it). Never this
        # connection itself: a connection referring to itself would wait for the cycle
        # collector to be freed.
        self.flusher: Writer | None = None
        self._started: asyncio.Task[Any] | None = None  # the task start_writer() made
        self._context: contextvars.Context | None = None  # ... and the context it runs in

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
            self.abandoned = True
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
        """Wake the writer if it waits."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def flush(self, now: float, pump: Pump) -> None:
        """What the hub's round does for a connection without a writer that can write as its
        task (no :attr:`flusher`): wake the writer. (One that can is the :attr:`flusher`:
        :meth:`Writer.flush <livepanel.writer.Writer.flush>` writes what queued at once.)"""
        self.wake()

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
        self._filter_by(types)

    def _filter_by(self, types: Sequence[str]) -> None:
        self.filter = shared_filter(types)
        self.everything = self.filter.everything  # read by the fan-out for every event

    def hold(self, types: Sequence[str]) -> None:
        """Set the new filter and hold live events back until :meth:`release`."""
        self._filter_by(types)
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

    def park(self) -> asyncio.Future[None]:
        """The writer waits: the future :meth:`wake` resolves (call :meth:`unpark` after)."""
        waiter = self.waiter = self.loop.create_future()
        self.outbox.park()
        return waiter

    def unpark(self) -> None:
        """The writer stopped waiting (woken or cancelled)."""
        self.waiter = None

    async def wait(self) -> None:
        """Return once something is queued or the connection is closed."""
        while not self.outbox and self.close_reason is None:
            try:
                await self.park()
            finally:
                self.unpark()

    def take(self) -> list[Frame]:
        """Remove and return every queued frame."""
        return self.outbox.take()

    def start_writer(self, writing: Coroutine[Any, Any, CloseReason]) -> asyncio.Task[CloseReason]:
        """Run ``writing`` (the transport's :meth:`write`) in a task of the connection's own,
        started from the caller's (its ASGI task), in a copy of its context."""
        task, context = start_task(self.loop, writing)
        self._started, self._context = task, context
        return task

    async def write(
        self,
        send: SendText,
        heartbeat_interval: float | None = None,
        *,
        encode: Callable[[list[Frame]], str] | None = None,
        asgi_send: AsgiSend | None = None,
    ) -> CloseReason:
        """Drain the queue to ``send`` until the connection closes; return why it closed.

        Runs in the connection's own task (:meth:`start_writer`): every ``send``
        happens as that task, in its context (see :mod:`livepanel.writer`). Each
        round writes everything queued meanwhile (one frame each, or one
        newline-delimited frame with ``batch``). After ``heartbeat_interval``
        seconds without a frame it sends ``ping``. A write that fails with
        ``OSError`` means the client left; any other exception is logged and
        ends this connection alone with :attr:`CloseReason.INTERNAL_ERROR`.
        With ``encode``, each wake sends ``encode(frames)`` of everything
        queued, as one piece (an event stream's chunk). A ``send`` still
        running :data:`ABANDON_AFTER` seconds after the close is cancelled, with
        this coroutine's task.
        """
        # no local name for the task: a cancelled task keeps its exception, whose traceback
        # holds this frame, and a name for the task here would make that a cycle
        self._writer = asyncio.current_task()
        started, self._started = self._started, None
        context = self._context if started is not None and self._writer is started else None
        del started
        writing = Writer(
            self,
            self._counters,
            send,
            heartbeat_interval,
            encode=encode,
            context=context,
            asgi_send=asgi_send,
        )
        if context is not None:  # it can write as its task: the hub's rounds call it
            self.flusher = writing
        try:
            return await writing.run()
        finally:
            self.flusher = None
            self._writer = None
            self._context = None
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
