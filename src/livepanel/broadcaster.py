"""Publishing, and feeding every event loop's fan-out: the top of the delivery path.

One event from ``broadcast_event()`` to the socket, one file per step:

1. :class:`Broadcaster` (here) validates it, lets observers see it, and hands
   it to the backend (:mod:`livepanel.backends`);
2. the backend stores it and calls the broadcaster back, from its own loop,
   with new events in stream order; each is serialized once into a shared
   :class:`~livepanel.outbox.Frame` and posted to every loop's hub;
3. each :class:`~livepanel.hub.Hub` offers it to the matching connections of
   its loop (:mod:`livepanel.hub`), each :class:`~livepanel.outbox.Outbox`
   queues it under its bounds, and the hub wakes their writers in rounds;
4. each :class:`~livepanel.connection.Connection`'s writer, in the client's
   own task, sends what queued (:mod:`livepanel.connection`).

A broadcast never waits on a client. A ``subscribe`` with ``since`` or
``state`` is answered from here too: the broadcaster asks the backend for the
replay or the state and hands it to the connection's outbox. See
``docs/concepts.md``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

from livepanel.backends import Backend, MemoryBackend, backend_from_url
from livepanel.census import Census
from livepanel.connection import CloseReason, Connection
from livepanel.errors import BackendUnavailable, ConfigurationError
from livepanel.events import Event, audience_of, prepare_payload, registered_types
from livepanel.home import BackendHome, HomeState, call_on
from livepanel.hub import Hub
from livepanel.observer import Observer
from livepanel.outbox import DeliveryCounters, Frame, SlowConsumerPolicy
from livepanel.protocol import error_frame, parse_id, type_globs
from livepanel.state import DEFAULT_STATE_LIMIT, state_frame, state_payload
from livepanel.subscription import SlowConsumer, Subscription

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

_RESUME_UNAVAILABLE = error_frame(
    "resume_unavailable", "the events after 'since' are no longer retained; refetch your state"
)


class _RecentTexts:
    """The JSON of the newest events, shared by every replay instead of encoded per connection."""

    __slots__ = ("_ids", "_limit", "_texts")

    def __init__(self, limit: int) -> None:
        self._texts: dict[str, str] = {}
        self._ids: deque[str] = deque()
        self._limit = limit

    def remember(self, frames: list[Frame]) -> None:
        """Keep the text of ``frames`` (the broadcaster's lock is held)."""
        texts, ids = self._texts, self._ids
        for frame in frames:
            event_id = frame.event.id  # type: ignore[union-attr]
            if event_id is not None:
                texts[event_id] = frame.text
                ids.append(event_id)
        while len(ids) > self._limit:
            texts.pop(ids.popleft(), None)

    def text_of(self, event: Event) -> str:
        """An event's JSON: the copy the live broadcast made, else encoded now."""
        text = self._texts.get(event.id) if event.id is not None else None
        return text if text is not None else event.to_json()


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
        self.backend = _backend_for(
            backend, history, queue_size, slow_consumer, queue_bytes, state_limit
        )
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.slow_consumer: SlowConsumerPolicy = slow_consumer
        self._texts = _RecentTexts(max(history, 1000))
        self._counters = DeliveryCounters()
        self._lock = threading.Lock()  # the hubs and the head id
        self._hubs: dict[asyncio.AbstractEventLoop, Hub] = {}
        self._head_id = ""
        self._home = BackendHome(self.backend, self._deliver, self._on_control, self._started_at)
        self.census = Census(self._users_changed)
        self._draining = False
        self._observers: list[Observer] = []
        self._on_publish: list[Callable[[Event], Event]] = []
        self._on_fanout: list[Callable[[Sequence[Event]], None]] = []
        self._on_users: list[Callable[[], None]] = []

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
        prepared = self._prepared(event, payload, audience)
        try:
            accepted = self.backend.publish_nowait(prepared)
        except BackendUnavailable:
            self._counters.publish_failures += 1
            raise
        self._counters.published += 1
        if not self._home.claimed():
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
        prepared = self._prepared(event, payload, audience)
        try:
            stored = await self.call_backend(lambda: self.backend.publish(prepared))
        except BackendUnavailable:
            self._counters.publish_failures += 1
            raise
        self._counters.published += 1
        return stored

    def _prepared(self, event: object, payload: object, audience: Any) -> Event:
        prepared = _prepare(event, payload, audience)
        for published in self._on_publish:
            prepared = published(prepared)
        return prepared

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the backend, on this loop unless it runs on a live one already.

        Done on first use anyway; call it at startup to fail early.

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """
        await self._home.start()

    def start_soon(self) -> None:
        """Start in the running loop without waiting; a no-op when started or outside a loop.

        ``publish()`` and ``LivePanelMiddleware`` call it, so that a process
        which publishes but serves no dashboard still hands its events to the
        backend. A failure is logged; the next use tries again.
        """
        self._home.start_soon(self.start)

    def _started_at(self, head: str) -> None:
        with self._lock:
            self._head_id = head

    async def close(self) -> None:
        """Close every connection and subscription (1001) and stop the backend."""
        with self._lock:
            hubs = list(self._hubs.values())
        home = self._home.detach()
        for hub in hubs:
            hub.close_all(CloseReason.GOING_AWAY)
        if home is not None:
            await call_on(home, self.backend.stop)

    async def call_backend(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` on the loop the backend runs on, starting it first if needed.

        For features built on a backend capability (tickets' single-use claims,
        presence, health): a backend's client belongs to the loop that started it.

        Example::

            first = await broadcaster.call_backend(lambda: claims.claim_once(key, ttl=60))

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """
        await self._home.start()
        return await self._home.call(call)

    def observe(self, observer: Observer) -> Observer:
        """Let ``observer`` watch this broadcaster (see :class:`~livepanel.observer.Observer`).

        Only the methods its class overrides are called. Returns it.
        """
        self._observers.append(observer)
        if observer.overrides("published"):
            self._on_publish.append(observer.published)
        if observer.overrides("fanned_out"):
            self._on_fanout.append(observer.fanned_out)
        if observer.overrides("users_changed"):
            self._on_users.append(observer.users_changed)
        return observer

    @property
    def observers(self) -> tuple[Observer, ...]:
        """The observers registered with :meth:`observe`, in order."""
        return tuple(self._observers)

    def _users_changed(self) -> None:
        for changed in self._on_users:
            changed()

    # ------------------------------------------------------------------ fan-out

    def _deliver(self, events: Sequence[Event]) -> None:
        """The backend's callback: new events in stream order, from any thread, one call
        at a time."""
        if not events:
            return
        frames = [Frame(event, event.to_json()) for event in events]  # serialized once
        with self._lock:
            self._head_id = events[-1].id or self._head_id
            self._texts.remember(frames)
            hubs = list(self._hubs.values())
            for hub in hubs:
                hub.post(frames)
        for hub in hubs:
            if not hub.kick():
                self._forget(hub)
        for fanned_out in self._on_fanout:
            fanned_out(events)

    def _hub(self) -> Hub:
        """This loop's hub, created (at the stream's head) on first use."""
        loop = asyncio.get_running_loop()
        hub = self._hubs.get(loop)
        if hub is None:
            with self._lock:
                hub = self._hubs.get(loop)
                if hub is None:
                    hub = Hub(loop, self._head_id, self.census, self._resubscribe)
                    self._hubs[loop] = hub
        return hub

    def _forget(self, hub: Hub) -> None:
        """Drop the hub of a loop that closed (its connections went with it)."""
        with self._lock:
            if self._hubs.get(hub.loop) is not hub:
                return
            del self._hubs[hub.loop]
            gone = hub.forget()
        for conn in gone:
            if conn.dashboard:
                self.census.left(conn.user, conn.transport)

    @asynccontextmanager
    async def connection(
        self,
        *,
        batch: bool = False,
        dashboard: bool = True,
        user: str | None = None,
        audiences: Iterable[str] | None = None,
        transport: str = "websocket",
    ) -> AsyncIterator[Connection]:
        """Open a :class:`~livepanel.connection.Connection` on this loop; close it on exit.

        The endpoint-facing API: a transport opens one per client once the
        handshake passed, queues ``welcome`` (with
        :attr:`Connection.last_event_id <livepanel.connection.Connection.last_event_id>`),
        subscribes, and runs its writer in the client's own task. ``dashboard=False``
        opens an in-process consumer (as :meth:`subscribe` does): not counted
        as a connection, never revoked, never told ``resume_unavailable``.

        Example::

            async with broadcaster.connection() as conn:
                await conn.subscribe(["*"], since=None)
                async for event in Subscription(conn): ...
        """
        await self.start()
        hub = self._hub()
        hub.fan_out()  # what reached this loop before us is before our first event
        conn = Connection(
            hub,
            self._counters,
            queue_size=self.queue_size,
            policy=self.slow_consumer,
            batch=batch,
            dashboard=dashboard,
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
        await self.call_backend(lambda: self.backend.send_control(message))
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
        with self._lock:
            hubs = list(self._hubs.values())
        return sum(hub.revoke(user, who, code) for hub in hubs)

    # ------------------------------------------------------------------ resubscribing

    async def _resubscribe(
        self, conn: Connection, types: tuple[str, ...], since: str | None, state: bool
    ) -> bool | None:
        """Replace ``conn``'s filter; with ``since``, replay with no gap and no duplicate;
        with ``state`` (and no resumable ``since``), queue a ``state`` frame first."""
        if since is None and not state:
            conn.set_types(types)  # checked already: by the protocol, or by subscribe()
            return None
        if since is not None:
            parse_id(since)
        conn.hold(types)
        if since is not None:
            events: list[Event] | None = None
            try:
                events = await self.call_backend(lambda: self.backend.replay(since))
            except BackendUnavailable as exc:
                logger.warning(
                    "livepanel: cannot replay now (%s); answering resume_unavailable", exc
                )
            except asyncio.CancelledError:
                conn.release(since, None, unavailable=_RESUME_UNAVAILABLE)
                raise
            if events is not None:
                self._counters.replays_granted += 1
            else:
                self._counters.replays_unavailable += 1
            if events is not None or not state:
                return conn.release(
                    since, events, self._texts.text_of, unavailable=_RESUME_UNAVAILABLE
                )
        await self._send_state(conn, since)
        return False if since is not None else None

    async def _send_state(self, conn: Connection, since: str | None) -> None:
        """Queue the state at a stream position P, then the held events after P.

        The live events already queued are held; the state covers every event
        up to P, so those up to P, held or still on their way, are dropped (the
        replay hand-over with an empty replay ending at P), and every later one
        follows.
        """
        try:
            snapshot = await self.call_backend(self.backend.state)
        except (BackendUnavailable, NotImplementedError) as exc:
            # the client goes on as if it had not asked: live events (or resume_unavailable)
            logger.warning("livepanel: cannot read the state now (%s)", exc)
            if since is not None:
                conn.release(since, None, unavailable=_RESUME_UNAVAILABLE)
            else:
                conn.release(conn.last_event_id, [])  # a release: nothing is covered
            return
        except asyncio.CancelledError:
            conn.release(
                since or conn.last_event_id, None if since else [], unavailable=_RESUME_UNAVAILABLE
            )
            raise
        conn.push_control(state_frame(snapshot, conn.filter, sees=conn.sees))
        conn.release(snapshot.last_event_id, [], self._texts.text_of)

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
        snapshot = await self.call_backend(self.backend.state)
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
        async with self.connection(dashboard=False) as conn:
            subscription = Subscription(conn)
            subscription.resumed = await conn.subscribe(globs, since)
            yield subscription

    # ------------------------------------------------------------------ numbers

    @property
    def started(self) -> bool:
        """Whether the backend has started and runs on a live event loop."""
        return self._home.state is HomeState.RUNNING

    @property
    def backend_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the backend runs on (``None`` before the first start)."""
        return self._home.loop

    @property
    def last_event_id(self) -> str:
        """The newest event id delivered in this process (or the epoch's start id)."""
        return self._head_id

    @property
    def connection_count(self) -> int:
        """Live dashboard connections of this broadcaster in this process, on every loop."""
        return self.census.connections

    @property
    def users(self) -> dict[str, int]:
        """This process's live dashboards by user (``""``: anonymous), a copy."""
        return self.census.users

    @property
    def replays(self) -> dict[str, int]:
        """Replays answered so far, by outcome (``granted``, ``unavailable``), a copy."""
        c = self._counters
        return {"granted": c.replays_granted, "unavailable": c.replays_unavailable}

    @property
    def draining(self) -> bool:
        """Whether the app serving this broadcaster began shutting down (health answers 503)."""
        return self._draining

    def mark_draining(self, draining: bool = True) -> None:
        """Record that the app began shutting down (``LivePanelApp.shutdown()`` calls it)."""
        self._draining = draining

    def stats(self) -> dict[str, Any]:
        """Counters for dashboards and tests.

        Keys: ``connections``, ``connections_by_transport``, ``published``,
        ``delivered``, ``dropped``, ``slow_disconnects``, ``replayed``,
        ``conflated``, ``subscribers``, ``publish_failures`` (the publishes that
        raised ``BackendUnavailable``, unless the backend counts its own, as the
        Redis backend does for the events its outbox could not write), plus
        what the backend adds (``state_evicted``: state entries evicted by
        ``state_limit``).
        """
        c = self._counters
        with self._lock:
            subscribers = sum(len(hub.connections) for hub in self._hubs.values())
        data: dict[str, Any] = {
            "connections": self.census.connections,
            "connections_by_transport": self.census.by_transport,
            "subscribers": subscribers,
            "published": c.published,
            "delivered": c.delivered,
            "dropped": c.dropped,
            "slow_disconnects": c.slow_disconnects,
            "replayed": c.replayed,
            "conflated": c.conflated,
            "publish_failures": c.publish_failures,
        }
        data.update(self.backend.stats())
        return data

    async def presence(self) -> dict[str, Any]:
        """Who is connected, on every worker: see :func:`livepanel.presence.collect`.

        Example::

            await broadcaster.presence()
            # {"users": [{"user": "alice", "connections": 2}], "connections": 3}
        """
        from livepanel.presence import collect

        return await collect(self)

    async def health(self, *, stall_after: float = 5.0, timeout: float = 2.0) -> dict[str, Any]:
        """Whether this process serves live events: see :func:`livepanel.health.check`.

        Example::

            report = await broadcaster.health()
            # {"ok": True, "backend": "ok", "readerLagSeconds": 0.0, "connections": 3,
            #  "draining": False}
        """
        from livepanel.health import check

        return await check(self, stall_after=stall_after, timeout=timeout)

    def __repr__(self) -> str:
        return f"Broadcaster({type(self.backend).__name__}, connections={self.connection_count})"


def _backend_for(
    backend: Backend | str | None,
    history: int,
    queue_size: int,
    slow_consumer: str,
    queue_bytes: int,
    state_limit: int,
) -> Backend:
    """Check the broadcaster's settings and make its backend."""
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
        return MemoryBackend(history=history, state_limit=state_limit)
    if isinstance(backend, str):
        return backend_from_url(backend, history=history, state_limit=state_limit)
    if not isinstance(backend, Backend):
        raise ConfigurationError(
            "Broadcaster: backend must be None, a URL string or a Backend instance"
        )
    return backend


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
