"""One consumer of the stream: its queue, its filter, its replay hand-over and its writer.

A :class:`Connection` owns everything that belongs to one dashboard (or one
``Broadcaster.subscribe()`` consumer), and nothing else writes it:

* the broadcaster's fan-out calls :meth:`Connection.push` with each matching
  live event, on the connection's own event loop; it never blocks and never
  waits on the client;
* the transport (the ASGI endpoint) queues its own frames with
  :meth:`Connection.push_control` and runs :meth:`Connection.write`, the
  writer, inside the connection's own task, so every ``send`` of the server
  runs in that task and its context;
* a replay (``since``) goes through :meth:`Connection.begin_replay` and
  :meth:`Connection.end_replay`, which hold back live events meanwhile and
  drop those the replay covers: no gap, no duplicate, whatever the backend.

How a connection ends is a :class:`CloseReason`; the transport maps it to a
close code at its edge. See ``docs/concepts.md``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Literal

from livepanel.events import Event
from livepanel.protocol import TypeFilter, control_frame, error_frame, parse_id
from livepanel.state import conflation_key

if TYPE_CHECKING:
    from livepanel.broadcaster import _Counters, _Hub

__all__ = [
    "BATCH_LINGER_MAX",
    "MAX_CONTROL_FRAMES",
    "WAKE_AFTER_TURNS",
    "WAKE_CHUNK",
    "CloseReason",
    "Connection",
    "Frame",
    "SlowConsumerPolicy",
]

logger = logging.getLogger("livepanel")

SlowConsumerPolicy = Literal["disconnect", "drop", "conflate"]
"""What a full queue does: ``"disconnect"`` (close with 1013), ``"drop"`` (lose the oldest)
or ``"conflate"`` (replace a queued event of the same state entry, else close with 1013)."""
SendText = Callable[[str], Awaitable[object]]
"""Writes one text frame to the client: the transport's ``send`` of a ``websocket.send``."""

BATCH_LINGER_MAX = 0.010
"""Seconds a batching connection's events may wait for company in a frame, at most."""
WAKE_AFTER_TURNS = 1
"""Event-loop turns a writer's first queued event waits for company before it is woken."""
WAKE_CHUNK = 256
"""Writers woken per event-loop turn, at most: fewer than CPython's young-generation
garbage-collection threshold (700), so that a round's wakes never start a collection."""
SENT_MEMORY = 1024
"""How many of the events last sent a connection remembers, so a replay never repeats them."""
MAX_CONTROL_FRAMES = 256
"""Control frames (pongs, errors) that may wait for one client; beyond, it is closed (1013)."""


class CloseReason(enum.Enum):
    """Why a connection ended; the transport turns it into a close code.

    Example::

        >>> CloseReason.SLOW_CONSUMER.flushes_first
        False
    """

    CLIENT_LEFT = "client_left"
    """The client went away (or closed): nothing more to send."""
    GOING_AWAY = "going_away"
    """The server is shutting down (1001)."""
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
_RESUME_UNAVAILABLE = "the events after 'since' are no longer retained; refetch your state"


class Frame:
    """One server frame on its way out: the event (``None`` for control frames) and its
    JSON text, built once and shared by every connection's queue.

    ``live`` marks a live broadcast event, the only kind ``queue_size`` bounds:
    control frames and replayed events never count against it.

    Example::

        >>> event = Event("session.killed", {"sessionKey": "s1", "agentId": "a1"}, id="e:1")
        >>> frame = Frame(event, event.to_json())
        >>> frame.live, frame.position
        (True, ('e', (1,)))
    """

    __slots__ = ("_position", "event", "live", "size", "text")

    def __init__(self, event: Event | None, text: str, *, live: bool = True) -> None:
        self.event = event
        self.text = text
        self.size = len(text)  # what it counts against max_bytes, measured once
        self.live = live and event is not None
        self._position: tuple[str, tuple[int, ...]] | None = None

    @property
    def position(self) -> tuple[str, tuple[int, ...]] | None:
        """The event's (epoch, position) in the stream, parsed once; ``None`` without an id."""
        if self._position is None and self.event is not None and self.event.id is not None:
            self._position = parse_id(self.event.id)
        return self._position


class Connection:
    """The queue, filter, replay hand-over and writer of one consumer of the stream.

    Created by :meth:`Broadcaster.connection() <livepanel.Broadcaster.connection>`
    on the running event loop, which it belongs to.

    Args:
        counters: the broadcaster's counters (delivered, dropped, slow disconnects).
        queue_size: how many live events may wait; what happens beyond is ``policy``.
        policy: ``"disconnect"`` (close with :attr:`CloseReason.SLOW_CONSUMER`),
            ``"drop"`` (lose the oldest live event) or ``"conflate"`` (replace a
            queued event of the same state entry, else as ``"disconnect"``).
        batch: pack every queued frame into one, newline-delimited (``?batch=1``).
        is_connection: a dashboard (counted in ``connection_count``), not an
            in-process ``subscribe()`` consumer.
        user: who holds it, for revocation and per-user numbers.
        max_bytes: how many bytes of live and control frames may wait; beyond,
            the connection is closed as a slow consumer (a replay is not counted).
        audiences: the audience strings this connection belongs to; it receives an
            event whose audience shares one of them, or has none. ``None``: every event.
        last_event_id: the newest event of the stream when it opened (``welcome``'s
            ``lastEventId``): every later event reaches it.

    Example, what a transport does once the handshake passed::

        async with broadcaster.connection(batch=False) as conn:
            conn.push_control(welcome)
            await conn.subscribe(["session.*"], since=last_id)
            reason = await conn.write(send_text, heartbeat_interval=25.0)
    """

    __slots__ = (
        "_counters",
        "_held",
        "_hub",
        "_marked",
        "_replaying",
        "_sent",
        "_skip",
        "_waiter",
        "audiences",
        "batch",
        "close_reason",
        "controls",
        "filter",
        "is_connection",
        "last_event_id",
        "last_sent",
        "live_count",
        "max_bytes",
        "policy",
        "queue",
        "queue_size",
        "queued_bytes",
        "replayed",
        "revoked_code",
        "transport",
        "user",
    )

    def __init__(
        self,
        hub: _Hub,
        counters: _Counters,
        *,
        queue_size: int,
        policy: SlowConsumerPolicy,
        batch: bool = False,
        is_connection: bool = True,
        user: str | None = None,
        last_event_id: str = "",
        max_bytes: int = 16 * 2**20,
        audiences: frozenset[str] | None = None,
        transport: str = "websocket",
    ) -> None:
        self._hub = hub
        self._counters = counters
        self._waiter: asyncio.Future[None] | None = None
        self._marked = False  # waiting in the hub's list of writers to wake this turn
        self._held: list[Frame] | None = None  # live events held back while a replay runs
        self._skip: tuple[str, tuple[int, ...]] | None = None  # live events a replay covered
        # the events last handed to the transport: a replay never sends one of them again
        self._sent: deque[Frame] = deque(maxlen=SENT_MEMORY)
        self.queue: deque[Frame] = deque()
        self.live_count = 0  # live events in the queue: what queue_size bounds
        self.controls = 0  # control frames in the queue (pongs, errors): MAX_CONTROL_FRAMES
        self.queued_bytes = 0  # text of live and control frames in the queue: max_bytes
        self.max_bytes = max_bytes
        self._replaying = 0  # replayed events still in the queue: one replay at a time
        self.replayed = 0  # events replayed to this connection, in all
        self.filter = TypeFilter()
        self.queue_size = queue_size
        self.policy = policy
        self.batch = batch
        self.is_connection = is_connection
        self.user = user
        self.last_event_id = last_event_id  # the stream's newest event when it opened
        self.audiences = audiences  # None: sees every event
        self.transport = transport  # "websocket" or "sse", for the numbers
        self.revoked_code: int | None = None
        self.close_reason: CloseReason | None = None
        self.last_sent = hub.loop.time()

    # ------------------------------------------------------------------ fan-out side

    def push(self, frame: Frame) -> None:
        """Queue a live event; never blocks, never raises (the hub calls it on our loop)."""
        if (
            self._held is not None
            or self._skip is not None
            or self.close_reason is not None
            or self.live_count >= self.queue_size
            or self.queued_bytes >= self.max_bytes
        ):
            self._push_rare(frame)
            return
        self.queue.append(frame)
        self.live_count += 1
        self.queued_bytes += frame.size
        if self._waiter is not None and not self._marked:
            self._marked = True
            self._hub.wake_later(self)

    def _push_rare(self, frame: Frame) -> None:
        """:meth:`push` off the common path: a replay running or just done, closed, full."""
        if self.close_reason is not None:
            return
        if self._held is not None:
            self._held.append(frame)
            return
        if self._skip is not None and self._covered(frame):
            return
        if self.queued_bytes >= self.max_bytes:
            self._too_slow()  # whatever the policy: dropping events cannot shrink control frames
            return
        if self.live_count >= self.queue_size:
            if self.policy == "conflate" and self._conflate(frame):
                return
            if self.policy != "drop":
                self._too_slow()
                return
            self._drop_oldest_live()
        self.queue.append(frame)
        self.live_count += 1
        self.queued_bytes += frame.size
        if self._waiter is not None and not self._marked:
            self._marked = True
            self._hub.wake_later(self)

    def push_control(self, text: str) -> None:
        """Queue a frame that is not a broadcast event (welcome, pong, error).

        A client that makes the server queue more than ``MAX_CONTROL_FRAMES``
        of them, or more than ``max_bytes`` in all, without reading them is
        closed as a slow consumer.
        """
        if self.close_reason is not None:
            return
        if self.controls >= MAX_CONTROL_FRAMES or self.queued_bytes >= self.max_bytes:
            self._too_slow()
            return
        self.queue.append(Frame(None, text))
        self.controls += 1
        self.queued_bytes += len(text)
        self._wake()

    def _too_slow(self) -> None:
        self._counters.slow_disconnects += 1
        self.close(CloseReason.SLOW_CONSUMER)

    @property
    def replaying(self) -> bool:
        """Whether events of the last replay are still waiting to be sent."""
        return self._replaying > 0

    def _dequeued(self, frame: Frame) -> None:
        """Account for a frame leaving the queue."""
        if frame.live:
            self.live_count -= 1
            self.queued_bytes -= frame.size
        elif frame.event is None:
            self.controls -= 1
            self.queued_bytes -= frame.size
        else:
            self._replaying -= 1

    def close(self, reason: CloseReason) -> None:
        """Stop queueing; the writer returns ``reason`` (the first reason given wins).

        The connection leaves the fan-out at once (it no longer counts as
        live), even while its writer is still stuck on a full socket.
        """
        if self.close_reason is None:
            self.close_reason = reason
            self._hub.leave(self)
            self._wake()

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

    def _drop_oldest_live(self) -> None:
        """``slow_consumer="drop"``: lose the oldest live event, never a control frame."""
        queue = self.queue
        for index, queued in enumerate(queue):
            if queued.live:
                del queue[index]
                self._dequeued(queued)
                self._counters.dropped += 1
                return

    def _conflate(self, frame: Frame) -> bool:
        """``slow_consumer="conflate"``: replace a queued live event of the same state entry."""
        key = conflation_key(frame.event) if frame.event is not None else None
        if key is None:
            return False
        queue = self.queue
        for index, queued in enumerate(queue):
            if queued.live and conflation_key(queued.event) == key:  # type: ignore[arg-type]
                del queue[index]
                queue.append(frame)
                self.queued_bytes += frame.size - queued.size
                self._counters.conflated += 1
                return True
        return False

    def _covered(self, frame: Frame) -> bool:
        """Whether a live event is one the last replay already delivered."""
        skip = self._skip
        position = frame.position
        if skip is None or position is None or position[0] != skip[0]:
            self._skip = None  # another epoch: the replay covers nothing of it
            return False
        if position[1] <= skip[1]:
            return True
        self._skip = None  # past the replay: nothing later can be covered
        return False

    def wake(self) -> None:
        """Wake the writer if it waits (the hub calls it once per round)."""
        self._marked = False
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake(self) -> None:
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
        return await self._hub.resubscribe(self, types, since, state)

    def set_types(self, types: Sequence[str]) -> None:
        """Replace the type filter (events already queued stay)."""
        self.filter = TypeFilter(types)

    def begin_replay(self, types: Sequence[str]) -> None:
        """Hold live events back until :meth:`end_replay`; set the new filter.

        Events already queued but not sent (live, or from an earlier replay)
        are held too: the new replay carries them again if they are retained,
        and :meth:`end_replay` decides.
        """
        self.filter = TypeFilter(types)
        queue = self.queue
        held = [frame for frame in queue if frame.event is not None]
        if held:  # in place: the writer may hold a reference to the queue
            controls = [frame for frame in queue if frame.event is None]
            queue.clear()
            queue.extend(controls)
            self.live_count = self._replaying = 0
            self.queued_bytes = sum(frame.size for frame in controls)
        self._held = held
        self._skip = None

    def end_replay(
        self,
        since: str,
        replayed: list[Event] | None,
        text_of: Callable[[Event], str] = Event.to_json,
    ) -> bool:
        """Queue the replay, then the held events it does not cover.

        ``replayed`` is every retained event after ``since`` in stream order,
        or ``None`` when ``since`` is not retained. Live events that arrive
        later and are covered by the replay (a backend whose live feed trails
        its storage) are dropped as they come. ``text_of`` gives an event's
        JSON (the broadcaster's shared copy, not a new one per connection).
        Returns whether it resumed.
        """
        held, self._held = self._held or [], None
        match = self.filter.matches
        if replayed is None:
            if self.is_connection:
                self.push_control(error_frame("resume_unavailable", _RESUME_UNAVAILABLE))
            for frame in held:  # what was queued stays queued, behind the error
                if match(frame.event.type):  # type: ignore[union-attr]
                    self._requeue(frame)
            return False
        start = parse_id(since)
        end = parse_id(replayed[-1].id) if replayed and replayed[-1].id else start
        if self._sent:
            # events after since already handed to the transport are on their way (a
            # subscribe while frames are in flight): the replay sends the others only
            sent = {frame.event.id for frame in self._sent}  # type: ignore[union-attr]
            replayed = [e for e in replayed if e.id not in sent]
        frames = [
            Frame(e, text_of(e), live=False) for e in replayed if match(e.type) and self.sees(e)
        ]
        self.queue.extend(frames)  # a replay is delivered whole, beyond queue_size
        self._replaying += len(frames)
        self.replayed += len(frames)
        self._counters.replayed += len(frames)
        self._skip = end
        for frame in held:
            if match(frame.event.type) and not self._covered(frame):  # type: ignore[union-attr]
                self._requeue(frame)
        self._wake()
        return True

    def _requeue(self, frame: Frame) -> None:
        """Put a held event back: a live one as live (it may be bounded), a replayed one not."""
        if frame.live:
            self.push(frame)
        else:
            self.queue.append(frame)
            self._replaying += 1

    # ------------------------------------------------------------------ writer side

    async def wait(self) -> None:
        """Return once something is queued or the connection is closed."""
        loop = self._hub.loop
        while not self.queue and self.close_reason is None:
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def take(self) -> list[Frame]:
        """Remove and return every queued frame."""
        frames = list(self.queue)
        self.queue.clear()
        self.live_count = self.controls = self.queued_bytes = self._replaying = 0
        return frames

    def popleft(self) -> Frame:
        """Remove and return the oldest queued frame."""
        frame = self.queue.popleft()
        self._dequeued(frame)
        return frame

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
        stream's chunk).
        """
        loop = self._hub.loop
        timer: asyncio.TimerHandle | None = None

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
        queue = self.queue
        try:
            while True:
                while not queue and self.close_reason is None:
                    waiter = self._waiter = loop.create_future()
                    try:
                        await waiter
                    finally:
                        self._waiter = None
                reason = self.close_reason
                if reason is not None and not (reason.flushes_first and self.queue):
                    return reason
                if encode is not None or self.batch:
                    controls = self.controls
                    frames = self.take()
                    self._note_sent(frames, controls)
                    if encode is not None:
                        await send(encode(frames))
                    elif len(frames) == 1:
                        await send(frames[0].text)
                    else:
                        await send("\n".join([f.text for f in frames]))
                    counters.delivered += len(frames) - controls
                else:
                    sent = 0
                    remember = self._sent.append
                    while queue:
                        if self.close_reason is not None and not self.close_reason.flushes_first:
                            break
                        frame = queue.popleft()
                        if frame.live:  # _dequeued() inlined: the common case
                            self.live_count -= 1
                            self.queued_bytes -= frame.size
                            remember(frame)
                            sent += 1
                        else:
                            self._dequeued(frame)
                            if frame.event is not None:
                                remember(frame)
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
            if timer is not None:
                timer.cancel()

    def _note_sent(self, frames: list[Frame], controls: int) -> None:
        """Remember the events among ``frames`` (``controls`` of them are control frames)."""
        if controls:
            self._sent.extend(frame for frame in frames if frame.event is not None)
        else:
            self._sent.extend(frames)

    async def next_event(self) -> Event | None:
        """The next event for an in-process consumer; ``None`` once closed."""
        while True:
            if self.close_reason is not None:
                return None
            if self.queue:
                frame = self.popleft()
                if frame.event is not None:
                    self._counters.delivered += 1
                    return frame.event
                continue
            await self.wait()
