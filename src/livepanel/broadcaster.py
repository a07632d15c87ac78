"""The fan-out hub: publish from anywhere, deliver to every matching connection.

A broadcast never waits on a client. Each event is serialized once into a
shared :class:`~livepanel.connection.Frame`, and each matching connection gets a
reference to it in its own bounded queue (:class:`~livepanel.connection.Connection`).
Connections live on any number of event loops: the backend hands new events
to the broadcaster, which posts them to a small hub per loop; each hub fans
them out on its own loop, and each connection's writer, in the connection's
own task, sends what queued. See ``docs/concepts.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

from livepanel.backends import Backend, MemoryBackend, backend_from_url
from livepanel.connection import (
    BATCH_LINGER_MAX,
    WAKE_AFTER_TURNS,
    WAKE_CHUNK,
    CloseReason,
    Connection,
    Frame,
    SlowConsumerPolicy,
)
from livepanel.errors import BackendUnavailable, ConfigurationError, LivePanelError
from livepanel.events import Event, audience_of, prepare_payload, registered_types
from livepanel.protocol import parse_id, type_globs
from livepanel.state import DEFAULT_STATE_LIMIT, state_frame, state_payload

__all__ = [
    "Broadcaster",
    "SlowConsumer",
    "Subscription",
    "broadcast_event",
    "get_broadcaster",
    "set_broadcaster",
]

logger = logging.getLogger("livepanel")

T = TypeVar("T")


class SlowConsumer(LivePanelError):
    """A subscription fell ``queue_size`` events behind and was closed.

    Example::

        async with broadcaster.subscribe() as events:
            try:
                async for event in events:
                    await slow_handler(event)
            except SlowConsumer:
                ...  # resubscribe with since=<last id handled> to catch up
    """


class _Counters:
    __slots__ = ("conflated", "delivered", "dropped", "published", "replayed", "slow_disconnects")

    def __init__(self) -> None:
        self.conflated = 0
        self.published = 0
        self.delivered = 0
        self.dropped = 0
        self.slow_disconnects = 0
        self.replayed = 0


class _Hub:
    """The connections of one event loop, and the inbox through which events reach them.

    The backend may deliver on any thread; :meth:`post` puts the frames in the
    inbox (in stream order: the broadcaster posts under its lock) and the hub
    fans them out on its own loop, at once when already there. Writers whose
    queue got something are woken once per loop turn; batching writers linger
    as long as the previous batching round took (at most ``BATCH_LINGER_MAX``),
    so that under load the events published meanwhile share one frame.
    """

    __slots__ = (
        "_batchers",
        "_draining",
        "_left",
        "_scheduled",
        "_writers",
        "broadcaster",
        "connections",
        "groups",
        "inbox",
        "last_id",
        "loop",
        "thread",
    )

    def __init__(self, broadcaster: Broadcaster, loop: asyncio.AbstractEventLoop, last_id: str):
        self.broadcaster = broadcaster
        self.loop = loop
        self.thread = threading.get_ident()
        self.connections: list[Connection] = []
        # the same connections by their audiences (None: sees everything)
        self.groups: dict[frozenset[str] | None, list[Connection]] = {}
        self.inbox: deque[list[Frame]] = deque()
        self.last_id = last_id  # the newest event fanned out here: welcome's lastEventId
        self._scheduled = False
        self._writers = _Waker(loop, WAKE_AFTER_TURNS)
        self._batchers = _Waker(loop, WAKE_AFTER_TURNS, BATCH_LINGER_MAX)
        self._draining = False
        self._left = False  # a connection closed during a drain: prune after it

    def join(self, conn: Connection) -> None:
        """Add ``conn`` to the fan-out of this loop."""
        self.connections.append(conn)
        self.groups.setdefault(conn.audiences, []).append(conn)
        if conn.is_connection:
            self.broadcaster._count(1, conn.transport)

    async def resubscribe(
        self, conn: Connection, types: Iterable[str], since: str | None, state: bool = False
    ) -> bool | None:
        """``conn``'s new filter and, with ``since``, its replay; with ``state``, its
        ``state`` frame (done by the broadcaster)."""
        return await self.broadcaster._resubscribe(conn, types, since, state)

    def leave(self, conn: Connection) -> None:
        """Take ``conn`` out of the fan-out (it closed); safe in the middle of a drain."""
        if self._draining:
            self._left = True
        else:
            try:
                self.connections.remove(conn)
            except ValueError:
                return
            self._ungroup(conn)
        if conn.is_connection:
            self.broadcaster._count(-1, conn.transport)

    def _ungroup(self, conn: Connection) -> None:
        group = self.groups.get(conn.audiences)
        if group is not None and conn in group:
            group.remove(conn)
            if not group:
                del self.groups[conn.audiences]

    def kick(self) -> bool:
        """Fan out what the inbox holds: now on our own thread, else soon on our loop.

        Returns ``False`` when our loop is closed (the hub is dead).
        """
        if threading.get_ident() == self.thread:
            self.drain()
        elif not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self.drain)
            except RuntimeError:  # the loop closed: its connections are gone with it
                return False
        return True

    def drain(self) -> None:
        self._scheduled = False  # first: a post racing us schedules another drain
        self._batchers.events += 1  # the publisher is still publishing: keep lingering
        inbox = self.inbox
        connections = self.connections
        self._draining = True
        try:
            while inbox:
                frames = inbox.popleft()
                for frame in frames:
                    event = frame.event
                    assert event is not None  # live frames carry events
                    kind = event.type
                    if event.audience is None:
                        for conn in connections:
                            if conn.filter.everything or conn.filter.matches(kind):
                                conn.push(frame)
                        continue
                    # one set intersection per group of connections with the same audiences
                    for audiences, group in self.groups.items():
                        if audiences is None or not event.audience.isdisjoint(audiences):
                            for conn in group:
                                if conn.filter.everything or conn.filter.matches(kind):
                                    conn.push(frame)
                self.last_id = frames[-1].event.id or self.last_id  # type: ignore[union-attr]
        finally:
            self._draining = False
        if self._left:
            self._left = False
            self.connections = [c for c in connections if not c.closed]
            for conn in connections:
                if conn.closed:
                    self._ungroup(conn)

    def wake_later(self, conn: Connection) -> None:
        """Wake ``conn``'s writer with the next round of this loop's writers."""
        (self._batchers if conn.batch else self._writers).add(conn)


class _Waker:
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
    """

    __slots__ = (
        "_began",
        "_due",
        "_handle",
        "_left",
        "_linger",
        "_next",
        "_waking",
        "cap",
        "events",
        "loop",
        "turns",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, turns: int, cap: float = 0.0) -> None:
        self.loop = loop
        self.turns = turns
        self.cap = cap
        self._due: list[Connection] = []  # writers for the next round
        self._waking: list[Connection] = []  # the round being woken, WAKE_CHUNK per turn
        self._next = 0  # the first writer of _waking not woken yet
        # a round is scheduled (a TimerHandle while it lingers) or being woken
        self._handle: asyncio.Handle | None = None
        self._left = 0  # turns still to wait
        self._linger = 0.0  # seconds: how long the last round took, capped
        self._began = 0.0  # when the round being woken began
        self.events = 0  # fan-outs on this loop so far (the hub counts them)

    def add(self, conn: Connection) -> None:
        self._due.append(conn)
        if self._handle is None:
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
            self._waking, self._due, self._next = self._due, [], 0
            self._began = self.loop.time()
        waking, start = self._waking, self._next
        end = min(start + WAKE_CHUNK, len(waking))
        for index in range(start, end):
            waking[index].wake()
        if end < len(waking):
            self._next = end
            self._handle = self.loop.call_soon(self._tick)
            return
        self._waking = []
        if self.cap:  # after these writers wrote: the round's length, then the next round
            self._handle = self.loop.call_soon(self._measure, self._began)
        else:
            self._handle = None
            if self._due:
                self._schedule()

    def _measure(self, began: float) -> None:
        took = self.loop.time() - began
        # a round that took a tenth of the cap means load: the next ones gather a full cap's
        # worth of events, so that each writer's wake (a task switch) carries many of them
        self._linger = self.cap if took > self.cap / 10 else took
        self._handle = None  # writers that joined meanwhile linger as long as just measured
        if self._due:
            self._schedule()


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

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.last_event_id = connection.last_event_id
        self.resumed: bool | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        event = await self._connection.next_event()
        if event is not None:
            return event
        if self._connection.close_reason is CloseReason.SLOW_CONSUMER:
            raise SlowConsumer("the subscription fell too far behind and was closed")
        raise StopAsyncIteration


class Broadcaster:
    """Publishes events to every connected dashboard and ``subscribe()`` consumer.

    Args:
        backend: ``None`` or ``"memory://"`` for the in-process backend, a
            ``"redis://host:6379/0"`` URL, or a :class:`~livepanel.backends.Backend`.
        history: how many recent events are kept for ``since``.
        queue_size: how many live events may wait for one client.
        queue_bytes: how many bytes of live and control frames may wait for one
            client (pongs and errors included); beyond, it is closed with 1013.
        slow_consumer: ``"disconnect"`` closes a client whose queue is full with
            1013 (it resumes with ``since``); ``"drop"`` drops its oldest event;
            ``"conflate"`` replaces a queued event by a newer one of the same
            state entry (collection and key), and closes with 1013 when none is.
        state_limit: most entries one keyed state collection holds (the entry
            updated longest ago is evicted); for a backend given as a URL or
            ``None``.

    The broadcaster starts itself inside the running event loop on first use,
    so it needs no lifespan wiring. One broadcaster serves connections on any
    number of event loops in its process; the backend runs on the loop that
    started it first (and moves to the next loop that uses it once that one
    is closed).

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
        queue_bytes: int = 16 * 2**20,
        state_limit: int = DEFAULT_STATE_LIMIT,
    ) -> None:
        if not isinstance(history, int) or history < 0:
            raise ConfigurationError("Broadcaster: history must be an integer >= 0")
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigurationError("Broadcaster: queue_size must be an integer >= 1")
        if not isinstance(queue_bytes, int) or queue_bytes < 1024:
            raise ConfigurationError("Broadcaster: queue_bytes must be an integer >= 1024")
        if slow_consumer not in ("disconnect", "drop", "conflate"):
            raise ConfigurationError(
                "Broadcaster: slow_consumer must be 'disconnect', 'drop' or 'conflate', "
                f"not {slow_consumer!r}"
            )
        if not isinstance(state_limit, int) or isinstance(state_limit, bool) or state_limit < 1:
            raise ConfigurationError("Broadcaster: state_limit must be an integer >= 1")
        if backend is None:
            backend = MemoryBackend(history=history, state_limit=state_limit)
        elif isinstance(backend, str):
            backend = backend_from_url(backend, history=history, state_limit=state_limit)
        elif not isinstance(backend, Backend):
            raise ConfigurationError(
                "Broadcaster: backend must be None, a URL string or a Backend instance"
            )
        self.backend = backend
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.slow_consumer: SlowConsumerPolicy = slow_consumer
        # the JSON of recent events, shared by every replay instead of encoded per connection
        self._texts: dict[str, str] = {}
        self._text_ids: deque[str] = deque()
        self._texts_max = max(history, 1000)
        self._counters = _Counters()
        self._lock = threading.Lock()  # hubs, head id and the backend's home loop
        self._hubs: dict[asyncio.AbstractEventLoop, _Hub] = {}
        self._connections = 0
        self._by_transport: dict[str, int] = {}  # dashboards by transport (metrics)
        self._head_id = ""
        self._home: asyncio.AbstractEventLoop | None = None  # where the backend runs
        self._ready: concurrent.futures.Future[None] | None = None  # the backend's start
        self._start_tasks: set[asyncio.Task[None]] = set()
        # operating it (livepanel.metrics, .health, .tracing, .presence): counters and hooks
        self.replays = {"granted": 0, "unavailable": 0}
        self.draining = False  # set by LivePanelApp.shutdown(): health answers 503
        self.fanout_hooks: list[Callable[[Sequence[Event]], None]] = []  # once per batch
        self.publish_hooks: list[Callable[[Event], Event]] = []  # livepanel.tracing
        self.users: dict[str, int] = {}  # this process's connections by user (presence)
        self.presence_hooks: list[Callable[[], None]] = []  # told when ``users`` changes

    # ------------------------------------------------------------------ publish

    @overload
    def publish(
        self, event: Event, payload: None = None, *, audience: Iterable[str] | str | None = None
    ) -> Event: ...
    @overload
    def publish(
        self,
        event: str,
        payload: Mapping[str, Any] | object,
        *,
        audience: Iterable[str] | str | None = None,
    ) -> Event: ...
    @overload
    def publish(
        self, event: object, payload: None = None, *, audience: Iterable[str] | str | None = None
    ) -> Event: ...

    def publish(
        self, event: object, payload: object = None, *, audience: Iterable[str] | str | None = None
    ) -> Event:
        """Validate, redact and hand the event on; never blocks, callable from any thread.

        ``event`` is an :class:`Event`, a registered payload object such as
        ``SessionCreated(...)``, or a type name with its ``payload``.
        ``audience`` (a string or a set of strings, e.g. ``{"team:ops"}``) limits
        who receives it to the connections sharing one of them; ``None``, everyone. Returns
        the accepted event (with its ``id`` where the backend assigns it
        synchronously, as the memory backend does).

        Raises:
            ValueError: an unregistered type or a payload that does not fit it.
        """
        prepared = _prepare(event, payload, audience)
        for hook in self.publish_hooks:
            prepared = hook(prepared)
        accepted = self.backend.publish_nowait(prepared)
        self._counters.published += 1
        if not self._started():
            self.start_soon()  # a worker that only publishes must still reach its backend
        return accepted

    @overload
    async def apublish(
        self, event: Event, payload: None = None, *, audience: Iterable[str] | str | None = None
    ) -> Event: ...
    @overload
    async def apublish(
        self,
        event: str,
        payload: Mapping[str, Any] | object,
        *,
        audience: Iterable[str] | str | None = None,
    ) -> Event: ...
    @overload
    async def apublish(
        self, event: object, payload: None = None, *, audience: Iterable[str] | str | None = None
    ) -> Event: ...

    async def apublish(
        self, event: object, payload: object = None, *, audience: Iterable[str] | str | None = None
    ) -> Event:
        """Like :meth:`publish`, but returns once the backend has stored the event.

        Raises:
            ValueError: as :meth:`publish`.
            BackendUnavailable: the backend cannot take the event.
        """
        prepared = _prepare(event, payload, audience)
        for hook in self.publish_hooks:
            prepared = hook(prepared)
        await self.start()
        stored = await self._at_home(lambda: self.backend.publish(prepared))
        self._counters.published += 1
        return stored

    # ------------------------------------------------------------------ lifecycle

    def _started(self) -> bool:
        ready, home = self._ready, self._home
        return ready is not None and home is not None and _alive(home)

    async def start(self) -> None:
        """Start the backend, on this loop unless it runs on a live one already.

        Done on first use anyway; call it at startup to fail early.

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """
        loop = asyncio.get_running_loop()
        ready = self._ready
        home = self._home
        if ready is not None and ready.done() and home is not None and _alive(home):
            ready.result()
            return
        with self._lock:
            ready, home = self._ready, self._home
            starter = ready is None or home is None or not _alive(home)
            if starter:
                self._home = loop
                ready = self._ready = concurrent.futures.Future()
        assert ready is not None
        if not starter:
            if not ready.done():
                await asyncio.wrap_future(ready)
            ready.result()
            return
        try:
            head = await self.backend.start(self._deliver, self._on_control)
        except BaseException as exc:
            with self._lock:
                if self._ready is ready:
                    self._ready = None
                    self._home = None
            ready.set_exception(exc)
            raise
        with self._lock:
            self._head_id = head
        ready.set_result(None)

    def start_soon(self) -> None:
        """Start in the running loop without waiting; a no-op when started or outside a loop.

        ``publish()`` and ``LivePanelMiddleware`` call it, so that a process
        which publishes but serves no dashboard still hands its events to the
        backend. A failure is logged; the next use tries again.
        """
        if self._started():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a plain thread: events wait for the first start in a loop
        if any(not task.done() and task.get_loop() is loop for task in self._start_tasks):
            return
        task = loop.create_task(self._start_logged())
        self._start_tasks.add(task)
        task.add_done_callback(self._start_tasks.discard)

    async def _start_logged(self) -> None:
        try:
            await self.start()
        except BackendUnavailable as exc:
            logger.warning("livepanel: the backend is unavailable, will retry on next use: %s", exc)

    async def close(self) -> None:
        """Close every connection and subscription (1001) and stop the backend."""
        with self._lock:
            hubs = list(self._hubs.values())
            home, self._home, self._ready = self._home, None, None
        for hub in hubs:
            for conn in list(hub.connections):
                if threading.get_ident() == hub.thread:
                    conn.close(CloseReason.GOING_AWAY)
                else:
                    try:
                        hub.loop.call_soon_threadsafe(conn.close, CloseReason.GOING_AWAY)
                    except RuntimeError:
                        pass  # its loop is closed: so is the connection
        if home is not None and _alive(home):
            await self._at(home, self.backend.stop)

    async def call_backend(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` on the loop the backend runs on, starting it first if needed.

        For features built on a backend capability (tickets' single-use claims,
        presence, health): a backend's client belongs to the loop that started it.

        Example::

            first = await broadcaster.call_backend(lambda: claims.claim_once(key, ttl=60))

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """
        await self.start()
        return await self._at_home(call)

    async def _at_home(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` on the backend's loop (here, or through a thread-safe hand-off)."""
        home = self._home
        if home is None:
            raise BackendUnavailable("livepanel: the broadcaster is not started")
        return await self._at(home, call)

    @staticmethod
    async def _at(loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[T]]) -> T:
        if loop is asyncio.get_running_loop():
            return await call()

        async def there() -> T:
            return await call()

        try:
            future = asyncio.run_coroutine_threadsafe(there(), loop)
        except RuntimeError:
            raise BackendUnavailable("livepanel: the backend's event loop is closed") from None
        return await asyncio.wrap_future(future)

    # ------------------------------------------------------------------ fan-out

    def _deliver(self, events: Sequence[Event]) -> None:
        """The backend's callback: new events in stream order, from any thread, one call
        at a time."""
        if not events:
            return
        frames = [Frame(event, event.to_json()) for event in events]  # serialized once
        with self._lock:
            self._head_id = events[-1].id or self._head_id
            self._remember(frames)
            hubs = list(self._hubs.values())
            for hub in hubs:
                hub.inbox.append(frames)
        for hub in hubs:
            if not hub.kick():
                self._forget(hub)
        for hook in self.fanout_hooks:
            hook(events)

    def _remember(self, frames: list[Frame]) -> None:
        """Keep the JSON of the newest events for replays (the lock is held)."""
        texts, ids = self._texts, self._text_ids
        for frame in frames:
            event_id = frame.event.id  # type: ignore[union-attr]
            if event_id is not None:
                texts[event_id] = frame.text
                ids.append(event_id)
        while len(ids) > self._texts_max:
            texts.pop(ids.popleft(), None)

    def _text_of(self, event: Event) -> str:
        """An event's JSON: the copy the live broadcast made, else encoded now."""
        text = self._texts.get(event.id) if event.id is not None else None
        return text if text is not None else event.to_json()

    def _hub(self) -> _Hub:
        """This loop's hub, created (at the stream's head) on first use."""
        loop = asyncio.get_running_loop()
        hub = self._hubs.get(loop)
        if hub is None:
            with self._lock:
                hub = self._hubs.get(loop)
                if hub is None:
                    hub = self._hubs[loop] = _Hub(self, loop, self._head_id)
        return hub

    def _forget(self, hub: _Hub) -> None:
        """Drop the hub of a loop that closed (its connections went with it)."""
        with self._lock:
            if self._hubs.get(hub.loop) is hub:
                del self._hubs[hub.loop]
                for conn in hub.connections:
                    if conn.is_connection:
                        self._connections -= 1
                        self._by_transport[conn.transport] -= 1
                hub.connections = []

    @asynccontextmanager
    async def connection(
        self,
        *,
        batch: bool = False,
        is_connection: bool = True,
        user: str | None = None,
        audiences: Iterable[str] | None = None,
        transport: str = "websocket",
    ) -> AsyncIterator[Connection]:
        """Open a :class:`~livepanel.connection.Connection` on this loop; close it on exit.

        The endpoint-facing API: a transport opens one per client once the
        handshake passed, queues ``welcome`` (with
        :attr:`Connection.last_event_id <livepanel.connection.Connection.last_event_id>`),
        subscribes, and runs its writer in the client's own task.

        Example::

            async with broadcaster.connection() as conn:
                await conn.subscribe(["*"], since=None)
                async for event in Subscription(conn): ...
        """
        await self.start()
        hub = self._hub()
        hub.drain()  # what reached this loop before us is before our first event
        conn = Connection(
            hub,
            self._counters,
            queue_size=self.queue_size,
            policy=self.slow_consumer,
            batch=batch,
            is_connection=is_connection,
            user=user,
            last_event_id=hub.last_id,
            max_bytes=self.queue_bytes,
            audiences=None if audiences is None else frozenset(audiences),
            transport=transport,
        )
        hub.join(conn)
        try:
            yield conn
        finally:
            conn.close(CloseReason.CLIENT_LEFT)  # leaves the fan-out, unless it already did
            with self._lock:
                if not hub.connections and self._hubs.get(hub.loop) is hub:
                    del self._hubs[hub.loop]

    async def disconnect(
        self,
        *,
        user: str | None = None,
        audience: Iterable[str] | str | None = None,
        code: int = 1008,
    ) -> int:
        """Close the connections of ``user`` and/or of ``audience``, on every worker.

        A connection matches when its user is ``user``, or when it belongs to one
        of ``audience`` (a connection that sees everything belongs to none). The
        other workers hear of it through the backend. Returns how many it closed
        in this process.

        Raises:
            ValueError: neither ``user`` nor ``audience``, or a close code a server
                may not send (use 1000, 1001, 1008, 1011, 1013 or 4000-4999).
            BackendUnavailable: the other workers could not be told.

        Example::

            closed_here = await broadcaster.disconnect(user="alice")  # access revoked
        """
        who = audience_of(audience)
        if user is None and who is None:
            raise ValueError("disconnect() needs a user, an audience or both")
        if code not in (1000, 1001, 1008, 1011, 1013) and not 4000 <= code <= 4999:
            raise ValueError(f"close code {code} is not one a server may send")
        message = {"disconnect": {"user": user, "audience": sorted(who or ()), "code": code}}
        closed = self._revoke(message)
        await self.start()
        await self._at_home(lambda: self.backend.send_control(message))
        return closed

    def _on_control(self, message: dict[str, Any]) -> None:
        self._revoke(message)

    def _revoke(self, message: dict[str, Any]) -> int:
        """The backend's control callback (any thread): close what a disconnect names here."""
        order = message.get("disconnect")
        if not isinstance(order, dict):
            return 0
        user, code = order.get("user"), order.get("code", 1008)
        audience = order.get("audience") or ()
        if not isinstance(code, int) or not (isinstance(user, str) or user is None):
            return 0
        try:
            who = frozenset(a for a in audience if isinstance(a, str))
        except TypeError:
            return 0

        def named(conn: Connection) -> bool:
            if conn.closed or not conn.is_connection:
                return False
            if user is not None and conn.user == user:
                return True
            return bool(who) and conn.audiences is not None and not who.isdisjoint(conn.audiences)

        closed = 0
        with self._lock:
            hubs = list(self._hubs.values())
        for hub in hubs:
            matching = [conn for conn in list(hub.connections) if named(conn)]
            closed += len(matching)
            for conn in matching:
                if threading.get_ident() == hub.thread:
                    conn.revoke(code)
                else:
                    try:
                        hub.loop.call_soon_threadsafe(conn.revoke, code)
                    except RuntimeError:
                        pass  # its loop closed: so did the connection
        return closed

    def _count(self, change: int, transport: str) -> None:
        with self._lock:
            self._connections += change
            self._by_transport[transport] = self._by_transport.get(transport, 0) + change

    async def _resubscribe(
        self, conn: Connection, types: Iterable[str], since: str | None, state: bool = False
    ) -> bool | None:
        """Replace ``conn``'s filter; with ``since``, replay with no gap and no duplicate;
        with ``state`` (and no resumable ``since``), queue a ``state`` frame first."""
        globs = tuple(types)  # checked already: by the protocol, or by subscribe()
        if since is None and not state:
            conn.set_types(globs)
            return None
        if since is not None:
            parse_id(since)
        conn.begin_replay(globs)
        if since is not None:
            events: list[Event] | None = None
            try:
                events = await self._at_home(lambda: self.backend.replay(since))
            except BackendUnavailable as exc:
                logger.warning(
                    "livepanel: cannot replay now (%s); answering resume_unavailable", exc
                )
            except asyncio.CancelledError:
                conn.end_replay(since, None)
                raise
            self.replays["granted" if events is not None else "unavailable"] += 1
            if events is not None or not state:
                return conn.end_replay(since, events, self._text_of)
        await self._send_state(conn, since)
        return False if since is not None else None

    async def _send_state(self, conn: Connection, since: str | None) -> None:
        """Queue the state at a stream position P, then the held events after P.

        The live events already queued are held (``begin_replay``); the state
        covers every event up to P, so those up to P, held or still on their
        way, are dropped (the replay hand-over with an empty replay ending at
        P), and every later one follows.
        """
        try:
            snapshot = await self._at_home(self.backend.state)
        except (BackendUnavailable, NotImplementedError) as exc:
            # the client goes on as if it had not asked: live events (or resume_unavailable)
            logger.warning("livepanel: cannot read the state now (%s)", exc)
            if since is not None:
                conn.end_replay(since, None)
            else:
                conn.end_replay(conn.last_event_id, [])  # a release: nothing is covered
            return
        except asyncio.CancelledError:
            conn.end_replay(since or conn.last_event_id, None if since else [])
            raise
        conn.push_control(state_frame(snapshot, conn.filter, sees=conn.sees))
        conn.end_replay(snapshot.last_event_id, [], self._text_of)

    async def state(self) -> dict[str, Any]:
        """The state kept for clients: the ``state`` frame's payload, every collection.

        ``{"lastEventId", "collections": {name: {"key", "keep", "entries"}},
        "types": {type: {"collection", "removes"}}}``, entries as wire objects;
        the fold of the stream up to and including ``lastEventId``.

        Example::

            state = await broadcaster.state()
            sessions = {e["payload"]["sessionKey"]: e for e in
                        state["collections"]["sessions"]["entries"]}

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """
        await self.start()
        snapshot = await self._at_home(self.backend.state)
        return state_payload(snapshot)

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
        globs = type_globs(types)
        if since is not None:
            parse_id(since)
        async with self.connection(is_connection=False) as conn:
            subscription = Subscription(conn)
            subscription.resumed = await conn.subscribe(globs, since)
            yield subscription

    # ------------------------------------------------------------------ numbers

    @property
    def started(self) -> bool:
        """Whether the backend has started and runs on a live event loop."""
        ready = self._ready
        return self._started() and ready is not None and ready.done() and not ready.exception()

    @property
    def backend_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the backend runs on (``None`` before the first start)."""
        return self._home

    @property
    def last_event_id(self) -> str:
        """The newest event id delivered in this process (or the epoch's start id)."""
        return self._head_id

    @property
    def connection_count(self) -> int:
        """Live dashboard connections of this broadcaster in this process, on every loop."""
        return self._connections

    def stats(self) -> dict[str, Any]:
        """Counters for dashboards and tests.

        Keys: ``connections``, ``published``, ``delivered``, ``dropped``,
        ``slow_disconnects``, ``replayed``, ``conflated``, ``publish_failures``,
        ``subscribers``, plus what the backend adds (``state_evicted``: state entries
        evicted by ``state_limit``).
        """
        c = self._counters
        with self._lock:
            subscribers = sum(len(hub.connections) for hub in self._hubs.values())
        data: dict[str, Any] = {
            "connections": self._connections,
            "connections_by_transport": dict(self._by_transport),
            "subscribers": subscribers,
            "published": c.published,
            "delivered": c.delivered,
            "dropped": c.dropped,
            "slow_disconnects": c.slow_disconnects,
            "replayed": c.replayed,
            "conflated": c.conflated,
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


def _prepare(event_or_type: Any, payload: Any, audience: Any = None) -> Event:
    who = audience_of(audience)
    if isinstance(event_or_type, Event):
        if payload is not None:
            raise ValueError("pass either an Event or a type and a payload, not both")
        event = event_or_type
        payload = prepare_payload(event.type, event.payload)
        return Event(event.type, payload, event.timestamp, audience=who or event.audience)
    if isinstance(event_or_type, str):
        return Event(event_or_type, prepare_payload(event_or_type, payload), audience=who)
    kind = getattr(type(event_or_type), "type", None)
    if isinstance(kind, str) and registered_types().get(kind) is type(event_or_type):
        if payload is not None:
            raise ValueError("a payload object carries its own fields; pass no second argument")
        return Event(kind, prepare_payload(kind, event_or_type), audience=who)
    raise ValueError(
        f"cannot publish a {type(event_or_type).__name__}; pass an Event, a registered "
        "payload object, or an event type name and its payload"
    )


def _alive(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the backend can run on ``loop``: it is running (here or in another thread).

    A loop that is closed, or stopped between two ``run_until_complete`` calls,
    is left for the next loop that uses the broadcaster.
    """
    return loop.is_running() and not loop.is_closed()


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


def broadcast_event(
    event_or_type: Any, payload: Any = None, *, audience: Iterable[str] | str | None = None
) -> Event:
    """Publish on the default broadcaster: the one call business code makes.

    Example::

        broadcast_event(SessionCreated(session_key=key, agent_id=agent, kind="direct"))
        broadcast_event("session.killed", {"sessionKey": key, "agentId": agent})
        broadcast_event(CronExecuted(...), audience={"team:ops"})  # only ops see it
    """
    return get_broadcaster().publish(event_or_type, payload, audience=audience)
