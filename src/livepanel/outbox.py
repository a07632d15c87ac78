"""One consumer's queue of frames, as a state machine with no I/O.

An :class:`Outbox` holds what waits for one dashboard (or one in-process
subscriber): live events, control frames (welcome, pong, error, state) and
replayed events. It owns the counters that bound it, the slow-consumer
policy, and the hand-over between a replay (or a ``state`` frame) and the live
stream, whose states are a :class:`Handover`:

* ``LIVE``: live events queue as they come;
* ``HOLDING``: a replay or a state is being fetched: live events wait aside;
* ``SKIPPING``: the replay is queued: live events it already covered are
  dropped as they come, until one lies past it;
* ``CLOSED``: nothing queues any more.

It never awaits, sleeps or touches a socket, so every case is a plain unit
test; :class:`~livepanel.connection.Connection` runs the writer around it.
See ``docs/concepts.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

from livepanel.events import Event
from livepanel.protocol import parse_id
from livepanel.state import conflation_key

__all__ = [
    "MAX_CONTROL_FRAMES",
    "SENT_MEMORY",
    "DeliveryCounters",
    "Frame",
    "Handover",
    "Outbox",
    "SlowConsumerPolicy",
]

SlowConsumerPolicy = Literal["disconnect", "drop", "conflate"]
"""What a full queue does: ``"disconnect"`` (close with 1013), ``"drop"`` (lose the oldest)
or ``"conflate"`` (replace a queued event of the same state entry, else close with 1013)."""

SENT_MEMORY = 1024
"""How many of the frames last sent an outbox remembers, so a replay never repeats their events."""
_FORGET_AT = SENT_MEMORY + 256
"""Frames sent at which the oldest beyond ``SENT_MEMORY`` are forgotten (256 at a time)."""
MAX_CONTROL_FRAMES = 256
"""Control frames (pongs, errors) that may wait for one client; beyond, it is closed (1013)."""

Position = tuple[str, tuple[int, ...]]


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
        self._position: Position | None = None

    @property
    def position(self) -> Position | None:
        """The event's (epoch, position) in the stream, parsed once; ``None`` without an id."""
        if self._position is None and self.event is not None and self.event.id is not None:
            self._position = parse_id(self.event.id)
        return self._position


class DeliveryCounters:
    """What every outbox of one broadcaster adds to: the numbers of ``Broadcaster.stats()``.

    Example::

        >>> DeliveryCounters().dropped
        0
    """

    __slots__ = (
        "conflated",
        "delivered",
        "dropped",
        "publish_failures",
        "published",
        "replayed",
        "replays_granted",
        "replays_unavailable",
        "slow_disconnects",
    )

    def __init__(self) -> None:
        self.published = 0
        self.publish_failures = 0  # publishes that raised BackendUnavailable to the caller
        self.delivered = 0
        self.dropped = 0
        self.conflated = 0
        self.slow_disconnects = 0
        self.replayed = 0
        self.replays_granted = 0
        self.replays_unavailable = 0

    def numbers(self) -> dict[str, int]:
        """The counters of ``Broadcaster.stats()``."""
        return {
            "published": self.published,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "slow_disconnects": self.slow_disconnects,
            "replayed": self.replayed,
            "conflated": self.conflated,
            "publish_failures": self.publish_failures,
        }

    def replays(self) -> dict[str, int]:
        """Replays answered so far, by outcome."""
        return {"granted": self.replays_granted, "unavailable": self.replays_unavailable}


class Handover(enum.Enum):
    """Where an outbox stands between a replay (or a state) and the live stream.

    Example::

        >>> box = Outbox(DeliveryCounters(), queue_size=10, policy="drop")
        >>> box.hold()
        >>> box.handover
        <Handover.HOLDING: 'holding'>
    """

    LIVE = "live"
    """Live events queue as they come."""
    HOLDING = "holding"
    """A replay or a state is being fetched: live events wait aside until it is queued."""
    SKIPPING = "skipping"
    """The replay is queued: live events it covered are dropped until one lies past it."""
    CLOSED = "closed"
    """The connection closed: nothing queues any more."""


_LIVE = Handover.LIVE  # read on every push: a module global, not an enum attribute look-up


def _forget_sent(queue: list[Frame], head: int) -> int:
    """Forget the frames sent before the last ``SENT_MEMORY`` (once per 256 sent); the new head."""
    del queue[: head - SENT_MEMORY]
    return SENT_MEMORY


class Outbox:
    """The bounded queue of one consumer, its counters and its replay hand-over.

    Args:
        counters: the broadcaster's counters (dropped, conflated, replayed, slow).
        queue_size: how many live events may wait; what happens beyond is ``policy``.
        policy: ``"disconnect"`` (call ``on_overflow``), ``"drop"`` (lose the oldest live
            event) or ``"conflate"`` (replace a queued event of its state entry, else disconnect).
        max_bytes: how many bytes of live and control frames may wait; beyond,
            ``on_overflow`` whatever the policy (a replay is not counted).
        on_overflow: called once the consumer is too slow to keep; it should :meth:`close` it.

    Example::

        >>> from livepanel.outbox import DeliveryCounters, Outbox
        >>> box = Outbox(DeliveryCounters(), queue_size=2, policy="drop")
        >>> box.push_control('{"type":"welcome"}')
        True
        >>> [frame.text for frame in box.take()]
        ['{"type":"welcome"}']
    """

    __slots__ = (
        "_counters",
        "_held",
        "_on_overflow",
        "_replaying",
        "_skip",
        "_state",
        "controls",
        "handover",
        "head",
        "live_count",
        "max_bytes",
        "parked",
        "policy",
        "queue",
        "queue_size",
        "queued_bytes",
        "replayed",
        "state_bytes",
    )

    def __init__(
        self,
        counters: DeliveryCounters,
        *,
        queue_size: int,
        policy: SlowConsumerPolicy,
        max_bytes: int = 16 * 2**20,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self._counters = counters
        self.queue_size = queue_size
        self.policy: SlowConsumerPolicy = policy
        self.max_bytes = max_bytes
        self._on_overflow = on_overflow
        # the frames last sent (a replay never repeats their events), then from head on those
        # queued: sending one only moves head. Read both freely; change them through methods.
        self.queue: list[Frame] = []
        self.head = 0
        self.handover = Handover.LIVE
        self._held: list[Frame] = []  # HOLDING: live events waiting aside
        self._skip: Position | None = None  # SKIPPING: the last position the replay covered
        self.live_count = 0  # live events in the queue: what queue_size bounds
        self.controls = 0  # control frames in the queue (pongs, errors): MAX_CONTROL_FRAMES
        self.queued_bytes = 0  # text of live and control frames in the queue: max_bytes
        self._replaying = 0  # replayed events still in the queue: one replay at a time
        self.replayed = 0  # events replayed to this consumer, in all
        self._state: Frame | None = None  # the state frame still queued: one at a time
        self.state_bytes = 0  # bytes of state frames queued for this consumer, in all
        self.parked = False  # the writer waits, and no live event told it yet

    # ------------------------------------------------------------------ reading it

    def __len__(self) -> int:
        return len(self.queue) - self.head

    def __iter__(self) -> Iterator[Frame]:
        """The queued frames, oldest first."""
        return iter(self.queue[self.head :])

    @property
    def replaying(self) -> bool:
        """Whether events of the last replay, or the last state frame, still wait."""
        return self._replaying > 0 or self._state is not None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self.handover is Handover.CLOSED

    # ------------------------------------------------------------------ filling it

    def push(self, frame: Frame) -> bool:
        """Queue a live event; return whether the parked writer should be told now. Never
        raises: beyond the bounds the policy decides; during a replay fetch it waits aside."""
        if (
            self.handover is not _LIVE
            or self.live_count >= self.queue_size
            or self.queued_bytes >= self.max_bytes
        ):
            return self._push_rare(frame)
        self.queue.append(frame)
        self.live_count += 1
        self.queued_bytes += frame.size
        if self.parked:
            self.parked = False
            return True
        return False

    def _push_rare(self, frame: Frame) -> bool:
        """:meth:`push` off the common path: a replay running or just done, closed, full
        (its tail repeats :meth:`push`'s on purpose: the common path stays one call)."""
        handover = self.handover
        if handover is Handover.CLOSED:
            return False
        if handover is Handover.HOLDING:
            self._held.append(frame)
            return False
        if handover is Handover.SKIPPING and self._covered(frame):
            return False
        if self.queued_bytes >= self.max_bytes:
            self._overflow()  # whatever the policy: dropping events cannot shrink control frames
            return False
        if self.live_count >= self.queue_size:
            if self.policy == "conflate" and self._conflate(frame):
                return False
            if self.policy != "drop":
                self._overflow()
                return False
            self._drop_oldest_live()
        self.queue.append(frame)
        self.live_count += 1
        self.queued_bytes += frame.size
        if self.parked:
            self.parked = False
            return True
        return False

    def push_control(self, text: str) -> bool:
        """Queue a frame that is not a broadcast event (welcome, pong, error); whether it was.

        Beyond ``MAX_CONTROL_FRAMES`` of them, or ``max_bytes`` in all, it overflows.
        """
        if self.handover is Handover.CLOSED:
            return False
        if self.controls >= MAX_CONTROL_FRAMES or self.queued_bytes >= self.max_bytes:
            self._overflow()
            return False
        self.queue.append(Frame(None, text))
        self.controls += 1
        self.queued_bytes += len(text)
        return True

    def push_state(self, text: str) -> bool:
        """Queue a ``state`` frame: a control frame, in flight (:attr:`replaying`) until taken."""
        if not self.push_control(text):
            return False
        self._state = self.queue[-1]
        self.state_bytes += len(text)
        return True

    def close(self) -> bool:
        """Stop queueing for good; return whether it was open until now."""
        if self.handover is Handover.CLOSED:
            return False
        self.handover = Handover.CLOSED
        # nothing replayed any more, no cycle through the connection: freed once dropped
        self._held, self._skip, self._on_overflow = [], None, None
        del self.queue[: self.head]  # what was sent
        self.head = 0
        return True

    def _overflow(self) -> None:
        self._counters.slow_disconnects += 1
        if self._on_overflow is not None:
            self._on_overflow()
        self.close()

    def _drop_oldest_live(self) -> None:
        """``slow_consumer="drop"``: lose the oldest live event, never a control frame."""
        queue = self.queue
        for index in range(self.head, len(queue)):
            queued = queue[index]
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
        for index in range(self.head, len(queue)):
            queued = queue[index]
            if queued.live and conflation_key(queued.event) == key:  # type: ignore[arg-type]
                del queue[index]
                queue.append(frame)
                self.queued_bytes += frame.size - queued.size
                self._counters.conflated += 1
                return True
        return False

    # ------------------------------------------------------------------ the replay hand-over

    def hold(self) -> None:
        """``LIVE``/``SKIPPING`` → ``HOLDING``: live events wait aside until :meth:`release`;
        so do events queued but not sent (the new replay carries them again if retained)."""
        if self.handover is Handover.CLOSED:
            return
        queue, head = self.queue, self.head
        held = [frame for frame in queue[head:] if frame.event is not None]
        if held:
            controls = [frame for frame in queue[head:] if frame.event is None]
            queue[head:] = controls
            self.live_count = self._replaying = 0
            self.queued_bytes = sum(frame.size for frame in controls)
        self._held = held
        self._skip = None
        self.handover = Handover.HOLDING

    def release(
        self,
        since: str,
        replayed: Sequence[Event] | None,
        *,
        keep: Callable[[Event], bool],
        text_of: Callable[[Event], str] = Event.to_json,
    ) -> bool:
        """``HOLDING`` → ``SKIPPING`` (or ``LIVE``): queue the replay, then what was held.
        ``replayed``: every retained event after ``since`` in stream order, or ``None``
        when ``since`` is not retained (the held events come back as they were, after
        any ``resume_unavailable`` the caller queues; ``LIVE``). Otherwise the replay's
        events that ``keep`` allows and were not sent already are queued, beyond
        ``queue_size``; held and live events it covers are dropped (``SKIPPING``), later
        ones follow. ``text_of``: an event's shared JSON. Returns whether it resumed."""
        if self.handover is not Handover.HOLDING:
            return False
        held, self._held = self._held, []
        if replayed is None:
            self.handover = Handover.LIVE
            for frame in held:  # what was queued stays queued, behind any error (as set_types)
                self._requeue(frame)
            return False
        start = parse_id(since)
        end = parse_id(replayed[-1].id) if replayed and replayed[-1].id else start
        if self.head:
            # events after since already handed to the writer are on their way (a
            # subscribe while frames are in flight): the replay sends the others only
            sent = {f.event.id for f in self.queue[: self.head] if f.event is not None}
            replayed = [e for e in replayed if e.id not in sent]
        frames = [Frame(e, text_of(e), live=False) for e in replayed if keep(e)]
        self.queue.extend(frames)
        self._replaying += len(frames)
        self.replayed += len(frames)
        self._counters.replayed += len(frames)
        self._skip = end
        self.handover = Handover.SKIPPING
        for frame in held:
            if keep(frame.event) and not self._covered(frame):  # type: ignore[arg-type]
                self._requeue(frame)
        return True

    def _covered(self, frame: Frame) -> bool:
        """Whether a live event is one the last replay already delivered (``SKIPPING``)."""
        skip = self._skip
        position = frame.position
        if skip is None or position is None or position[0] != skip[0]:
            self._stop_skipping()  # another epoch: the replay covers nothing of it
            return False
        if position[1] <= skip[1]:
            return True
        self._stop_skipping()  # past the replay: nothing later can be covered
        return False

    def _stop_skipping(self) -> None:
        self._skip = None
        if self.handover is Handover.SKIPPING:
            self.handover = Handover.LIVE

    def _requeue(self, frame: Frame) -> None:
        """Put a held event back: a live one as live (it may be bounded), a replayed one not."""
        if frame.live:
            self.push(frame)
        else:
            self.queue.append(frame)
            self._replaying += 1

    # ------------------------------------------------------------------ emptying it
    def park(self) -> None:
        """The writer waits: the next live event tells it (:meth:`push` returns ``True`` once)."""
        self.parked = True

    def pop(self) -> Frame:
        """Remove and return the oldest queued frame, remembering it (``IndexError``: none is)."""
        head = self.head
        frame = self.queue[head]
        self.head = head + 1
        if frame.live:
            self.live_count -= 1
            self.queued_bytes -= frame.size
        else:
            self._dequeued(frame)
        if head >= _FORGET_AT:
            self.head = _forget_sent(self.queue, head + 1)
        return frame

    def newest_sent(self) -> Position | None:
        """The position of the event last handed to the writer (``None``: none yet)."""
        queue = self.queue
        for index in range(self.head - 1, -1, -1):
            if queue[index].event is not None:
                return queue[index].position
        return None

    def take(self) -> list[Frame]:
        """Remove and return every queued frame, remembering them as sent."""
        frames = self.queue[self.head :]
        self.head = len(self.queue)
        if self.controls:
            self._state = None
        self.live_count = self.controls = self.queued_bytes = self._replaying = 0
        if self.head > _FORGET_AT:
            self.head = _forget_sent(self.queue, self.head)
        return frames

    def _dequeued(self, frame: Frame) -> None:
        """Account for a frame leaving the queue."""
        if frame.live:
            self.live_count -= 1
            self.queued_bytes -= frame.size
        elif frame.event is None:
            self.controls -= 1
            self.queued_bytes -= frame.size
            if frame is self._state:
                self._state = None
        else:
            self._replaying -= 1

    def discard(self) -> int:
        """Drop every queued frame unsent (a closed connection frees it at once); how many."""
        dropped = len(self)
        del self.queue[self.head :]
        self._held, self._state = [], None
        return dropped
