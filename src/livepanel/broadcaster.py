"""The fan-out hub: publish from anywhere, deliver to every matching subscriber.

A broadcast never waits on a client. Each event is serialized once into a
shared :class:`Delivery`, and each subscriber gets a reference to it in its own
bounded queue. When a queue is full the subscriber is closed with 1013
(``slow_consumer="disconnect"``) or loses its oldest item (``"drop"``), and
nobody else notices.

Who drains a connection's queue: while its writer is idle, one pass per
event-loop turn writes every touched queue straight to the server's ``send``
(no task switch per event and connection); the first ``send`` that would wait
on a slow socket is handed over, unfinished, to that connection's own writer,
which drains the rest. See docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import types
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, Literal

from livepanel.backends import Backend, MemoryBackend, backend_from_url
from livepanel.errors import BackendUnavailable, ConfigurationError, LivePanelError
from livepanel.events import Event, prepare_payload, registered_types
from livepanel.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_TRY_AGAIN_LATER,
    TypeFilter,
    error_frame,
    parse_id,
)

__all__ = [
    "BATCH_LINGER_MAX",
    "Broadcaster",
    "Delivery",
    "Sink",
    "SlowConsumer",
    "Subscriber",
    "Subscription",
    "broadcast_event",
    "get_broadcaster",
    "resume",
    "set_broadcaster",
]

logger = logging.getLogger("livepanel")

SlowConsumerPolicy = Literal["disconnect", "drop"]
Sink = Callable[[str], Awaitable[None]]
"""Writes one text frame to a connection: the ASGI ``send`` of a ``websocket.send``."""

BATCH_LINGER_MAX = 0.010
"""Seconds a batching connection's events may wait for company in a frame, at most."""


class SlowConsumer(LivePanelError):
    """A subscription fell ``queue_size`` events behind and was closed (1013).

    Example::

        async with broadcaster.subscribe() as events:
            try:
                async for event in events:
                    await slow_handler(event)
            except SlowConsumer:
                ...  # resubscribe with since=<last id handled> to catch up
    """


class Delivery:
    """One frame on its way to subscribers: the event (or ``None`` for control
    frames) and its JSON text, built once and shared by every queue.

    ``live`` marks a live broadcast event, the only kind ``queue_size`` bounds:
    control frames and replayed events never count against it.

    Example::

        >>> event = Event("session.killed", {"sessionKey": "s1", "agentId": "a1"}, id="e:1")
        >>> item = Delivery(event, event.to_json())
        >>> item.live, item.frame == event.to_json()
        (True, True)
    """

    __slots__ = ("event", "frame", "live")

    def __init__(self, event: Event | None, frame: str, *, live: bool = True) -> None:
        self.event = event
        self.frame = frame
        self.live = live and event is not None


class _Counters:
    __slots__ = ("delivered", "dropped", "published", "replayed", "slow_disconnects")

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.dropped = 0
        self.slow_disconnects = 0
        self.replayed = 0


class Subscriber:
    """A bounded queue of deliveries for one connection or ``subscribe()`` consumer.

    A connection's writer sets :attr:`sink` while it is idle: queued frames
    are then written by the broadcaster's per-turn pass (:class:`_Flusher`)
    instead of waking the writer for every event.

    Example, what the endpoint does for each connection::

        await broadcaster.start()
        sub = broadcaster.attach(["session.*"], is_connection=True)
        await broadcaster.resubscribe(sub, ["session.*"], since=last_id)
        for item in sub.take(batch=False):
            await send({"type": "websocket.send", "text": item.frame})
        broadcaster.detach(sub)
    """

    __slots__ = (
        "_catchup",
        "_counters",
        "_dirty",
        "_flusher",
        "_loop",
        "_waiter",
        "batch",
        "close_code",
        "failure",
        "filter",
        "inflight",
        "is_connection",
        "last_sent",
        "live_count",
        "policy",
        "queue",
        "queue_size",
        "sink",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        counters: _Counters,
        *,
        types: Iterable[str],
        queue_size: int,
        policy: SlowConsumerPolicy,
        is_connection: bool,
        flusher: _Flusher | None = None,
    ) -> None:
        self._loop = loop
        self._counters = counters
        self._flusher = flusher
        self._waiter: asyncio.Future[None] | None = None
        self._catchup: list[Delivery] | None = None
        self._dirty = False
        self.queue: deque[Delivery] = deque()
        self.live_count = 0  # live events in the queue: what queue_size bounds
        self.filter = TypeFilter(types)
        self.queue_size = queue_size
        self.policy = policy
        self.is_connection = is_connection
        self.close_code: int | None = None
        self.sink: Sink | None = None
        self.batch = False  # pack every queued frame into one, newline-delimited (?batch=1)
        self.inflight: tuple[Generator[Any, None, None], Any, int] | None = None
        self.failure: BaseException | None = None
        self.last_sent = loop.time()

    def push(self, item: Delivery) -> None:
        """Queue a live event; never blocks, never raises."""
        queue = self.queue
        if (
            self.sink is not None  # the common case first: an idle connection with room
            and self.live_count < self.queue_size
            and self._catchup is None
            and self.close_code is None
        ):
            queue.append(item)
            self.live_count += 1
            if not self._dirty:
                self._dirty = True
                self._flusher.mark(self)  # type: ignore[union-attr]  # a sink comes with a flusher
            return
        if self.close_code is not None:
            return
        if self._catchup is not None:
            self._catchup.append(item)
            return
        if self.live_count >= self.queue_size:
            if self.policy == "disconnect":
                self._counters.slow_disconnects += 1
                self.close(CLOSE_TRY_AGAIN_LATER)
                return
            self._drop_oldest_live()
        queue.append(item)
        self.live_count += 1
        if self.sink is None:
            self._wake()
        elif not self._dirty:
            self._dirty = True
            self._flusher.mark(self)  # type: ignore[union-attr]  # a sink comes with a flusher

    def _drop_oldest_live(self) -> None:
        """``slow_consumer="drop"``: lose the oldest live event, never a control frame."""
        queue = self.queue
        for index, queued in enumerate(queue):
            if queued.live:
                del queue[index]
                self.live_count -= 1
                self._counters.dropped += 1
                return

    def popleft(self) -> Delivery:
        """Remove and return the oldest queued item."""
        item = self.queue.popleft()
        if item.live:
            self.live_count -= 1
        return item

    def take_all(self) -> list[Delivery]:
        """Remove and return every queued item."""
        items = list(self.queue)
        self.queue.clear()
        self.live_count = 0
        return items

    def push_control(self, frame: str) -> None:
        """Queue a frame that is not a broadcast event; control frames are never bounded."""
        if self.close_code is None:
            self.queue.append(Delivery(None, frame))
            if self.sink is None:
                self._wake()
            elif not self._dirty:
                self._dirty = True
                self._flusher.mark(self)  # type: ignore[union-attr]

    def close(self, code: int) -> None:
        """Stop queueing and wake the writer, which closes the connection with ``code``."""
        if self.close_code is None:
            self.close_code = code
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Return once the queue holds something or the subscriber is closed."""
        while not self.queue and self.close_code is None:
            waiter = self._waiter = self._loop.create_future()
            await waiter

    async def idle(self, sink: Sink) -> None:
        """Let the broadcaster write to ``sink`` until the writer is needed again.

        Returns when the subscriber is closed, when a direct write has to wait
        (:attr:`inflight`) or failed (:attr:`failure`), or when frames were
        queued that the writer must send itself (a replay).
        """
        if self.queue or self.close_code is not None or self.inflight or self.failure:
            return
        self.sink = sink
        try:
            waiter = self._waiter = self._loop.create_future()
            await waiter
        finally:
            self.sink = None

    def take(self, batch: bool) -> list[Delivery]:
        """Remove and return the next item, or every queued item when ``batch``."""
        if batch:
            return self.take_all()
        return [self.popleft()] if self.queue else []

    def _write_direct(self, sink: Sink, now: float) -> int:
        """Write the queue to ``sink`` without awaiting; return the events written.

        A write that would wait is parked in :attr:`inflight` for the writer.
        """
        queue = self.queue
        written = 0
        while queue:
            if self.batch and len(queue) > 1:
                items = self.take_all()
                text = "\n".join([i.frame for i in items])
                count = sum(1 for i in items if i.event is not None)
            else:
                item = self.popleft()
                text = item.frame
                count = item.event is not None
            try:
                step = sink(text).__await__()
                # run the write up to its first wait: a for loop ends a finished write
                # without the cost of a StopIteration, which next() or send() would raise
                for waiting in step:
                    self.inflight = (step, waiting, count)  # the socket is full: hand it over
                    break
            except OSError:  # the client vanished: the writer ends the connection
                self.close_code = 1000
                break
            except BaseException as exc:  # the server refused: the writer raises it, as always
                self.failure = exc
                break
            if self.inflight is not None:
                break
            written += count
        self.last_sent = now
        if self.close_code is not None or self.inflight is not None or self.failure is not None:
            self.sink = None
            self._wake()
        return written


class _Flusher:
    """Writes the queues of connections whose writer is idle: once per event-loop turn.

    Batching connections (``?batch=1``) linger: their round runs as long after
    the first event as the previous batching round took to write (at most
    ``BATCH_LINGER_MAX`` seconds), so that under load the events published
    meanwhile share one frame. A quick round means an almost immediate next one.
    """

    __slots__ = ("_batch", "_batch_handle", "_dirty", "_linger", "_loop", "_scheduled", "counters")

    def __init__(self, loop: asyncio.AbstractEventLoop, counters: _Counters) -> None:
        self._loop = loop
        self._dirty: list[Subscriber] = []
        self._scheduled = False
        self._batch: list[Subscriber] = []
        self._batch_handle: asyncio.TimerHandle | None = None
        self._linger = 0.0  # seconds: how long the last batching round took, capped
        self.counters = counters

    def mark(self, sub: Subscriber) -> None:
        if sub.batch:
            self._batch.append(sub)
            if self._batch_handle is None:
                self._batch_handle = self._loop.call_later(self._linger, self._run_batch)
            return
        self._dirty.append(sub)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        self._write(dirty, self._loop.time())

    def _run_batch(self) -> None:
        self._batch_handle = None
        dirty, self._batch = self._batch, []
        began = self._loop.time()
        self._write(dirty, began)
        self._linger = min(BATCH_LINGER_MAX, self._loop.time() - began)

    def _write(self, dirty: list[Subscriber], now: float) -> None:
        written = 0
        for sub in dirty:
            sub._dirty = False
            sink = sub.sink
            if sink is not None and sub.close_code is None:
                written += sub._write_direct(sink, now)
        self.counters.delivered += written


@types.coroutine
def resume(step: Generator[Any, None, None], waiting: Any) -> Generator[Any, Any, None]:
    """Finish, inside the awaiting task, a write that :class:`_Flusher` started and parked.

    It hands the task what the write was waiting on, exactly as ``await``
    would have, and drives the write on until it completes.

    Example, what a connection's writer does with a parked write::

        if sub.inflight is not None:
            step, waiting, count = sub.inflight
            sub.inflight = None
            await resume(step, waiting)
    """
    throw = getattr(step, "throw", None)
    while True:
        try:
            yield waiting
        except GeneratorExit:
            close = getattr(step, "close", None)
            if close is not None:
                close()
            raise
        except BaseException as exc:
            if throw is None:
                raise
            try:
                waiting = throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = next(step)  # asyncio's tasks resume with None: the same as send(None)
            except StopIteration:
                return


class Subscription:
    """What ``Broadcaster.subscribe()`` yields: an async iterator of events.

    Attributes:
        last_event_id: the newest event id when the subscription opened.
        resumed: ``True`` when ``since`` was honoured, ``False`` when it was not
            retained (the consumer must refetch state), ``None`` without ``since``.

    Example::

        async with broadcaster.subscribe(["cron.*"], since=last_id) as events:
            if events.resumed is False:
                state = await refetch()
            async for event in events:
                state.apply(event)
    """

    def __init__(self, subscriber: Subscriber, last_event_id: str, counters: _Counters) -> None:
        self._subscriber = subscriber
        self._counters = counters
        self.last_event_id = last_event_id
        self.resumed: bool | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        sub = self._subscriber
        while True:
            if sub.close_code == CLOSE_TRY_AGAIN_LATER:
                raise SlowConsumer("the subscription fell too far behind and was closed")
            if sub.close_code is not None:
                raise StopAsyncIteration
            if sub.queue:
                item = sub.popleft()
                if item.event is not None:
                    self._counters.delivered += 1
                    return item.event
                continue
            await sub.wait()


class Broadcaster:
    """Publishes events to every connected dashboard and ``subscribe()`` consumer.

    Args:
        backend: ``None`` or ``"memory://"`` for the in-process backend, a
            ``"redis://host:6379/0"`` URL, or a :class:`~livepanel.backends.Backend`.
        history: how many recent events are kept for ``since``.
        queue_size: how many live events may wait for one client.
        slow_consumer: ``"disconnect"`` closes a client whose queue is full with
            1013 (it resumes with ``since``); ``"drop"`` drops its oldest event.

    The broadcaster starts itself inside the running event loop on first use,
    so it needs no lifespan wiring.

    Example::

        broadcaster = Broadcaster("redis://localhost:6379/0", history=5000)
        broadcaster.publish(SessionCreated(session_key="s1", agent_id="a1", kind="direct"))
    """

    def __init__(
        self,
        backend: Backend | str | None = None,
        *,
        history: int = 1000,
        queue_size: int = 1000,
        slow_consumer: SlowConsumerPolicy = "disconnect",
    ) -> None:
        if not isinstance(history, int) or history < 0:
            raise ConfigurationError("Broadcaster: history must be an integer >= 0")
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigurationError("Broadcaster: queue_size must be an integer >= 1")
        if slow_consumer not in ("disconnect", "drop"):
            raise ConfigurationError(
                f"Broadcaster: slow_consumer must be 'disconnect' or 'drop', not {slow_consumer!r}"
            )
        if backend is None:
            backend = MemoryBackend(history=history)
        elif isinstance(backend, str):
            backend = backend_from_url(backend, history=history)
        elif not isinstance(backend, Backend):
            raise ConfigurationError(
                "Broadcaster: backend must be None, a URL string or a Backend instance"
            )
        self.backend = backend
        self.history = history
        self.queue_size = queue_size
        self.slow_consumer: SlowConsumerPolicy = slow_consumer
        self._counters = _Counters()
        self._subscribers: list[Subscriber] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flusher: _Flusher | None = None
        self._starting: asyncio.Future[None] | None = None
        self._head_id = ""
        self._start_task: asyncio.Task[None] | None = None
        # operating it (livepanel.metrics, .health, .tracing, .presence): counters and hooks
        self.replays = {"granted": 0, "unavailable": 0}
        self.draining = False  # set by LivePanelApp.shutdown(): health answers 503
        self.fanout_hooks: list[Callable[[Sequence[Event]], None]] = []  # once per batch
        self.publish_hooks: list[Callable[[Event], Event]] = []  # livepanel.tracing
        self.users: dict[str, int] = {}  # this process's connections by user (presence)
        self.presence_hooks: list[Callable[[], None]] = []  # told when ``users`` changes

    # ------------------------------------------------------------------ publish

    def publish(self, event_or_type: Any, payload: Any = None) -> Event:
        """Validate, redact and hand the event on; never blocks, callable from any thread.

        Returns the accepted event (with its ``id`` where the backend assigns
        it synchronously, as the memory backend does).

        Raises:
            ValueError: an unregistered type or a payload that does not fit it.
        """
        event = _prepare(event_or_type, payload)
        for hook in self.publish_hooks:
            event = hook(event)
        self._counters.published += 1
        accepted = self.backend.publish_nowait(event)
        if self._starting is None:
            self.start_soon()  # a worker that only publishes must still reach its backend
        return accepted

    async def apublish(self, event_or_type: Any, payload: Any = None) -> Event:
        """Like :meth:`publish`, but returns once the backend has stored the event.

        Raises:
            ValueError: as :meth:`publish`.
            BackendUnavailable: the backend cannot take the event.
        """
        event = _prepare(event_or_type, payload)
        for hook in self.publish_hooks:
            event = hook(event)
        await self.start()
        stored = await self.backend.publish(event)
        self._counters.published += 1
        return stored

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind to the running loop and start the backend (done on first use anyway)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._starting is not None:
            if not self._starting.done():
                await asyncio.shield(self._starting)
            self._starting.result()
            return
        if self._loop is not None and self._loop is not loop and not self._loop.is_closed():
            raise RuntimeError(
                "this Broadcaster is running in another event loop; use one Broadcaster per loop"
            )
        self._loop = loop
        self._subscribers = []
        self._flusher = _Flusher(loop, self._counters)
        starting = self._starting = loop.create_future()
        try:
            self._head_id = await self.backend.start(loop, self._deliver)
        except BaseException as exc:
            self._starting = None
            self._loop = None
            starting.set_exception(exc)
            starting.exception()  # mark retrieved: the caller gets it raised
            raise
        starting.set_result(None)

    def start_soon(self) -> None:
        """Start in the running loop without waiting; a no-op when started or outside a loop.

        ``publish()`` and ``LivePanelMiddleware`` call it, so that a process
        which publishes but serves no dashboard still hands its events to the
        backend. A failure is logged; the next use tries again.
        """
        if self._starting is not None and self._loop is not None and not self._loop.is_closed():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a plain thread: events wait for the first start in a loop
        if self._start_task is None or self._start_task.done():
            self._start_task = loop.create_task(self._start_logged())

    async def _start_logged(self) -> None:
        try:
            await self.start()
        except BackendUnavailable as exc:
            logger.warning("livepanel: the backend is unavailable, will retry on next use: %s", exc)
        except RuntimeError as exc:  # bound to another loop: say so once, do not crash the caller
            logger.warning("livepanel: %s", exc)

    async def close(self, code: int = CLOSE_GOING_AWAY) -> None:
        """Close every subscriber (1001 by default) and stop the backend."""
        for sub in self._subscribers:
            sub.close(code)
        self._subscribers = []
        if self._loop is not None:
            await self.backend.stop()
        self._loop = None
        self._starting = None

    # ------------------------------------------------------------------ fan-out

    def _deliver(self, events: Sequence[Event]) -> None:
        subscribers = self._subscribers
        slow_before = self._counters.slow_disconnects  # the only close a push can cause
        for event in events:
            item = Delivery(event, event.to_json())  # serialized once for everyone
            kind = event.type
            for sub in subscribers:
                if sub.filter.everything or sub.filter.matches(kind):
                    sub.push(item)
        if events:
            self._head_id = events[-1].id or self._head_id
        if self._counters.slow_disconnects != slow_before:
            self._subscribers = [s for s in subscribers if s.close_code is None]
        for hook in self.fanout_hooks:
            hook(events)

    def attach(self, types: Iterable[str] = ("*",), *, is_connection: bool = False) -> Subscriber:
        """Register a subscriber for live events (after :meth:`start`)."""
        if self._loop is None:
            raise RuntimeError("Broadcaster.attach() needs await broadcaster.start() first")
        self.backend.flush()  # so the head id below matches what the subscriber will see
        sub = Subscriber(
            self._loop,
            self._counters,
            types=_globs(types),
            queue_size=self.queue_size,
            policy=self.slow_consumer,
            is_connection=is_connection,
            flusher=self._flusher,
        )
        self._subscribers.append(sub)
        return sub

    def detach(self, sub: Subscriber) -> None:
        """Stop delivering to ``sub``."""
        if sub.close_code is None:
            sub.close_code = 1000
        try:
            self._subscribers.remove(sub)
        except ValueError:
            pass

    @property
    def head_id(self) -> str:
        """The newest event id delivered here (or the epoch's start id)."""
        return self._head_id

    async def resubscribe(
        self, sub: Subscriber, types: Sequence[str], since: str | None = None
    ) -> bool | None:
        """Replace ``sub``'s filter and, with ``since``, replay what it missed.

        Replayed events go ahead of live ones with no gap and no duplicate.
        Returns ``True`` when resumed, ``False`` when ``since`` is not retained
        (an ``error`` frame ``resume_unavailable`` is queued for connections),
        ``None`` without ``since``.
        """
        sub.filter = TypeFilter(_globs(types))
        if since is None:
            return None
        # live events queued but not yet sent come again in the replay, so set them aside
        queued = [item for item in sub.queue if item.event is not None]
        sub.queue = deque(item for item in sub.queue if item.event is None)
        sub.live_count = 0
        sub._catchup = []
        try:
            events = await self.backend.replay(since)
        finally:
            buffered, sub._catchup = sub._catchup, None
        if events is None:
            if sub.is_connection:
                sub.push_control(
                    error_frame(
                        "resume_unavailable",
                        "the events after 'since' are no longer retained; refetch your state",
                    )
                )
            for item in (*queued, *buffered):
                sub.push(item)
            self.replays["unavailable"] += 1
            return False
        last = parse_id(events[-1].id or since)[1] if events else parse_id(since)[1]
        match = sub.filter.matches
        replayed = [Delivery(e, e.to_json(), live=False) for e in events if match(e.type)]
        sub.queue.extend(replayed)  # a replay is delivered whole, beyond queue_size
        self._counters.replayed += len(replayed)
        for item in buffered:
            if item.event is not None and parse_id(item.event.id or "")[1] > last:
                sub.push(item)
        sub._wake()
        self.replays["granted"] += 1
        return True

    @asynccontextmanager
    async def subscribe(
        self, types: Sequence[str] = ("*",), since: str | None = None
    ) -> AsyncIterator[Subscription]:
        """Receive events in Python: an async iterator of :class:`Event`.

        Example::

            async with broadcaster.subscribe(["cron.*"]) as events:
                async for event in events:
                    print(event.type, event.payload)

        Raises:
            ValueError: a malformed ``since``.
        """
        types = _globs(types)
        if since is not None:
            parse_id(since)
        await self.start()
        sub = self.attach(types)
        subscription = Subscription(sub, self._head_id, self._counters)
        try:
            subscription.resumed = await self.resubscribe(sub, types, since)
            yield subscription
        finally:
            self.detach(sub)

    # ------------------------------------------------------------------ numbers

    @property
    def connection_count(self) -> int:
        """Live WebSocket connections of this broadcaster in this process."""
        return sum(1 for s in self._subscribers if s.is_connection)

    def count_delivered(self, n: int) -> None:
        """Record ``n`` events written to a client (called by the connection writer)."""
        self._counters.delivered += n

    def stats(self) -> dict[str, Any]:
        """Counters for dashboards and tests.

        Keys: ``connections``, ``published``, ``delivered``, ``dropped``,
        ``slow_disconnects``, ``replayed``, ``publish_failures``, ``subscribers``,
        plus what the backend adds.
        """
        c = self._counters
        data: dict[str, Any] = {
            "connections": self.connection_count,
            "subscribers": len(self._subscribers),
            "published": c.published,
            "delivered": c.delivered,
            "dropped": c.dropped,
            "slow_disconnects": c.slow_disconnects,
            "replayed": c.replayed,
            "publish_failures": 0,
        }
        data.update(self.backend.stats())
        return data

    def count_user(self, user: str, delta: int) -> None:
        """Record a connection of ``user`` opening (``+1``) or closing (``-1``).

        The endpoint calls it; :meth:`presence` and :mod:`livepanel.presence` read it.

        Example::

            broadcaster.count_user("alice", +1)
            broadcaster.users  # {"alice": 1}
        """
        count = self.users.get(user, 0) + delta
        if count > 0:
            self.users[user] = count
        else:
            self.users.pop(user, None)
        for hook in self.presence_hooks:
            hook()

    async def presence(self) -> dict[str, Any]:
        """Who is connected, on every worker: see :func:`livepanel.presence.collect`.

        Example::

            await broadcaster.presence()
            # {"users": [{"user": "alice", "connections": 2}], "connections": 3}
        """
        from livepanel.presence import collect  # the presence module imports this one

        return await collect(self)

    async def health(self, *, stall_after: float = 5.0, timeout: float = 2.0) -> dict[str, Any]:
        """Whether this process serves live events: see :func:`livepanel.health.check`.

        Example::

            report = await broadcaster.health()
            # {"ok": True, "backend": "ok", "readerLagSeconds": 0.0, "connections": 3,
            #  "draining": False}
        """
        from livepanel.health import check  # the health module imports this one

        return await check(self, stall_after=stall_after, timeout=timeout)

    def __repr__(self) -> str:
        return f"Broadcaster({type(self.backend).__name__}, connections={self.connection_count})"


def _globs(types: Iterable[str]) -> tuple[str, ...]:
    if isinstance(types, str):
        raise ValueError(f"types is a list of type globs, e.g. [{types!r}], not a string")
    return tuple(types)


def _prepare(event_or_type: Any, payload: Any) -> Event:
    if isinstance(event_or_type, Event):
        if payload is not None:
            raise ValueError("pass either an Event or a type and a payload, not both")
        event = event_or_type
        return Event(event.type, prepare_payload(event.type, event.payload), event.timestamp)
    if isinstance(event_or_type, str):
        return Event(event_or_type, prepare_payload(event_or_type, payload))
    kind = getattr(type(event_or_type), "type", None)
    if isinstance(kind, str) and registered_types().get(kind) is type(event_or_type):
        if payload is not None:
            raise ValueError("a payload object carries its own fields; pass no second argument")
        return Event(kind, prepare_payload(kind, event_or_type))
    raise ValueError(
        f"cannot publish a {type(event_or_type).__name__}; pass an Event, a registered "
        "payload object, or an event type name and its payload"
    )


# ---------------------------------------------------------------------- the default one

_default: Broadcaster | None = None
_default_lock = threading.Lock()


def get_broadcaster() -> Broadcaster:
    """The process-wide default broadcaster, created on first use.

    Its backend comes from ``LIVEPANEL_BACKEND_URL`` (memory when unset).

    Example::

        >>> get_broadcaster() is get_broadcaster()
        True
    """
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Broadcaster(os.environ.get("LIVEPANEL_BACKEND_URL") or None)
    return _default


def set_broadcaster(broadcaster: Broadcaster | None) -> None:
    """Replace the default broadcaster (``None``: create a new one on next use).

    Example::

        set_broadcaster(Broadcaster("redis://localhost:6379/0", history=5000))
        broadcast_event(SessionKilled(session_key="s1", agent_id="a1"))  # goes to Redis
    """
    global _default
    if broadcaster is not None and not isinstance(broadcaster, Broadcaster):
        raise TypeError("set_broadcaster() takes a Broadcaster or None")
    with _default_lock:
        _default = broadcaster


def broadcast_event(event_or_type: Any, payload: Any = None) -> Event:
    """Publish on the default broadcaster: the one call business code makes.

    Example::

        broadcast_event(SessionCreated(session_key=key, agent_id=agent, kind="direct"))
        broadcast_event("session.killed", {"sessionKey": key, "agentId": agent})
    """
    return get_broadcaster().publish(event_or_type, payload)
