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
import functools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from livepanel.backends import (
    Backend,
    MemoryBackend,
    TransactionalPublish,
    backend_from_url,
    shared_receipts_of,
    transactional_publish_of,
)
from livepanel.census import Census, presence_view
from livepanel.connection import CloseReason, Connection
from livepanel.errors import BackendUnavailable, ConfigurationError
from livepanel.events import Event, audience_of, prepare_payload, registered_types
from livepanel.fanout import Fanout, RecentTexts, disconnect_order
from livepanel.home import BackendHome, HomeState, call_on
from livepanel.lag import DEFAULT_LAG_LIMIT, LagSummary
from livepanel.observer import Observer, Observers
from livepanel.outbox import DeliveryCounters, SlowConsumerPolicy
from livepanel.protocol import parse_id, type_globs
from livepanel.readiness import check
from livepanel.receipts import Receipt, ReceiptBook, check_confirm
from livepanel.resume import Resume
from livepanel.revocations import Revocations
from livepanel.state import DEFAULT_STATE_LIMIT, state_payload
from livepanel.subscription import SlowConsumer, Subscription
from livepanel.tally import Tally

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


class Broadcaster:
    """Publishes events to every connected dashboard and ``subscribe()`` consumer.

    Args:
        backend: ``None`` or ``"memory://"`` for the in-process backend, a
            ``"redis://host:6379/0"`` or ``"postgresql://host/db"`` URL, or a
            :class:`~livepanel.backends.Backend`.
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
        lag_limit: seconds after which a dashboard that acks but has acknowledged
            nothing sent to it counts as behind; when every acking one is, health fails.

    It starts itself inside the running event loop on first use, so it needs no
    lifespan wiring. It serves connections on any number of event loops in its
    process; the backend runs on the loop that started it first (and moves to the
    next loop that uses it once that one is closed).

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
        lag_limit: float = DEFAULT_LAG_LIMIT,
    ) -> None:
        if not lag_limit > 0:
            raise ValueError(f"Broadcaster: lag_limit must be seconds > 0, not {lag_limit!r}")
        self.lag_limit = float(lag_limit)
        self.backend = _backend_for(
            backend, history, queue_size, slow_consumer, queue_bytes, state_limit
        )
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.slow_consumer: SlowConsumerPolicy = slow_consumer
        self._counters = DeliveryCounters()
        self._observers = Observers()
        self.census = Census(self._observers.users_changed)  # who is connected, counted once
        texts = RecentTexts(max(history, 1000))
        resume = Resume(self.backend, self.call_backend, self._counters, texts.text_of)
        self._fanout = Fanout(self.census, resume.resubscribe, texts)
        self._home = BackendHome(
            self.backend, self._deliver, self._on_control, self._fanout.started_at
        )
        self._draining = False
        self.revocations: Revocations = self._fanout.revocations
        """The :meth:`disconnect` orders this process heard (its own and other workers')."""
        self._receipts = ReceiptBook(
            shared_receipts_of(self.backend), self.call_backend, lambda: self._fanout.head_id
        )
        subscribers = self._fanout.subscribers
        self._tally = Tally(self.census, subscribers, self._counters, self.backend, self._receipts)

    # ------------------------------------------------------------------ publish

    def publish(
        self,
        event: object,
        payload: object = None,
        *,
        audience: Iterable[str] | str | None = None,
        transaction: object = None,
    ) -> Event:
        """Validate, redact and hand the event on; never blocks, callable from any thread.

        ``event``: an :class:`Event`, a registered payload object (``SessionCreated(...)``)
        or a type name with its ``payload``. ``audience`` (a string or a set of strings,
        ``{"team:ops"}``) limits it to the connections sharing one; ``None``, everyone.
        ``transaction``: a sync driver connection, as :meth:`apublish` (this call waits).
        Returns the accepted event (with its ``id`` where the backend assigns it at once).

        Raises:
            ValueError: an unregistered type or a payload that does not fit it.
        """
        prepared = self._prepared(event, payload, audience)
        try:
            accepted = _hand_on(self.backend, transaction)(prepared)
        except BackendUnavailable:
            self._counters.publish_failures += 1
            raise
        self._counters.published += 1
        # a worker that only publishes must still reach its backend
        if not self._home.start_soon(self.start):
            self._home.warn_waiting()
        return accepted

    async def apublish(
        self,
        event: object,
        payload: object = None,
        *,
        audience: Iterable[str] | str | None = None,
        confirm: int = 0,
        within: float = 5.0,
        transaction: object = None,
    ) -> Event:
        """Like :meth:`publish`, but returns once the backend has stored the event; with
        ``confirm=N``, once ``N`` dashboards (on any worker) acknowledged it, or after
        ``within`` seconds: :meth:`receipts` says who did. ``transaction``: the driver's async
        connection with a transaction open (see ``TransactionalPublish``); the id comes at commit.

        Raises:
            ValueError: as :meth:`publish`, or a negative ``confirm`` or ``within``.
            BackendUnavailable: the backend cannot take the event.
        """
        within = check_confirm(confirm, within)
        prepared = self._prepared(event, payload, audience)
        try:
            if transaction is not None:  # the caller's connection, on its loop, once started
                await self._home.start()
                stored = await _in_transactions(self.backend).apublish_in(transaction, prepared)
            else:
                stored = await self.call_backend(lambda: self.backend.publish(prepared))
        except BackendUnavailable:
            self._counters.publish_failures += 1
            raise
        self._counters.published += 1
        if confirm and stored.id is not None:
            await self._receipts.wait(stored.id, confirm, within)
        return stored

    async def receipts(self, event_id: str) -> Receipt:
        """Who acknowledged ``event_id`` (or a later event), on every worker, as a
        :class:`~livepanel.receipts.Receipt`; ``ValueError`` for a malformed id,
        ``BackendUnavailable`` when the other workers' acks cannot be read."""
        return await self._receipts.receipt(event_id)

    def _prepared(self, event: object, payload: object, audience: Any) -> Event:
        return self._observers.published(_prepare(event, payload, audience))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the backend, on this loop unless it runs on a live one already (done on
        first use anyway; call it at startup to fail early). Raises ``BackendUnavailable``."""
        await self._home.start()

    def start_soon(self) -> None:
        """Start in the running loop without waiting (a no-op when started, or outside one)."""
        self._home.start_soon(self.start)

    async def close(self) -> None:
        """Close every connection and subscription (1001) and stop the backend."""
        home = self._home.detach()
        self._receipts.stop()
        self._fanout.close_all(CloseReason.GOING_AWAY)
        if home is not None:
            await call_on(home, self.backend.stop)

    async def call_backend(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` on the loop the backend runs on (its client belongs to it), starting
        it first if needed; ``BackendUnavailable`` when it cannot be reached."""
        await self._home.start()
        return await self._home.call(call)

    def observe(self, observer: Observer) -> Observer:
        """Let ``observer`` watch this broadcaster (see :class:`~livepanel.observer.Observer`);
        only the methods its class overrides are called. Returns it."""
        self._observers.add(observer)
        return observer

    # ------------------------------------------------------------------ fan-out

    def _deliver(self, events: Sequence[Event]) -> None:
        """The backend's callback: new events in stream order, any thread, one call at a time."""
        if events:
            self._fanout.deliver(events)
            self._observers.fanned_out(events)

    def connection(
        self,
        *,
        batch: bool = False,
        dashboard: bool = True,
        user: str | None = None,
        audiences: Iterable[str] | None = None,
        transport: str = "websocket",
        authenticated_at: float | None = None,
    ) -> AbstractAsyncContextManager[Connection]:
        """Open a :class:`~livepanel.connection.Connection` on this loop; close it on exit.

        A transport opens one per client once the handshake passed, queues
        ``welcome``, subscribes, and runs its writer in the client's own task.
        ``dashboard=False``: an in-process consumer (as :meth:`subscribe`), not
        counted, never revoked, never told ``resume_unavailable``, never acking.
        A :meth:`disconnect` heard since ``authenticated_at`` (monotonic) closes it.
        """
        return _Opened(self, (batch, dashboard, user, audiences, transport, authenticated_at))

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
        other workers hear of it through the backend; handshakes in flight and
        tickets issued before it are refused (:attr:`revocations`). Returns how many
        it closed in this process.

        Raises:
            ValueError: neither ``user`` nor ``audience``, or a close code a server
                may not send (use 1000, 1001, 1008, 1011, 1013 or 4000-4999).
            BackendUnavailable: the other workers could not be told.
        """
        message = disconnect_order(user, audience_of(audience), code, time.time())
        closed = self._fanout.obey(message)
        await self.call_backend(lambda: self.backend.send_control(message))
        return closed

    def _on_control(self, message: dict[str, Any]) -> None:
        """The backend's control callback (any thread): another worker's disconnect order."""
        self._fanout.obey(message)

    async def state(self) -> dict[str, Any]:
        """The state kept for clients: the ``state`` frame's payload, every collection
        (``{"lastEventId", "collections", "types"}``, see ``docs/state.md``).

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """
        snapshot = await self.call_backend(self.backend.state)
        return state_payload(snapshot)

    @asynccontextmanager
    async def subscribe(
        self, types: Sequence[str] = ("*",), since: str | None = None
    ) -> AsyncIterator[Subscription]:
        """Receive events in Python: an async iterator of :class:`Event`. Example::

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
        return self._fanout.head_id

    @property
    def connection_count(self) -> int:
        """Live dashboard connections of this broadcaster in this process, on every loop."""
        return self.census.connections

    @property
    def replays(self) -> dict[str, int]:
        """Replays answered so far, by outcome (``granted``, ``unavailable``), a copy."""
        return self._counters.replays()

    @property
    def draining(self) -> bool:
        """Whether the app serving this broadcaster began shutting down (health answers 503)."""
        return self._draining

    def mark_draining(self, draining: bool = True) -> None:
        """Record that the app began shutting down (``LivePanelApp.shutdown()`` calls it)."""
        self._draining = draining

    def stats(self) -> dict[str, Any]:
        """Counters for dashboards and tests (:meth:`Tally.stats <livepanel.tally.Tally.stats>`,
        ``lag`` included). See ``docs/operating.md`` and ``docs/staying-live.md``."""
        return self._tally.stats()

    def lag(self) -> LagSummary:
        """The lag of this process's acking dashboards: a :class:`~livepanel.lag.LagSummary`."""
        return self._tally.lag()

    async def presence(self) -> dict[str, Any]:
        """Who is connected: on every worker with :func:`livepanel.presence.track`, else in
        this process (``{"users": [{"user", "connections"}], "connections"}``)."""
        view = await self._observers.presence_view()
        return view if view is not None else presence_view(self.census.users)

    async def health(self, *, stall_after: float = 5.0, timeout: float = 2.0) -> dict[str, Any]:
        """Whether this process serves live events: see :func:`livepanel.readiness.check`."""
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


def _hand_on(backend: Backend, transaction: object) -> Callable[[Event], Event]:
    """How ``publish`` hands an event on: to the backend, or into the caller's transaction."""
    if transaction is None:
        return backend.publish_nowait
    return functools.partial(_in_transactions(backend).publish_in, transaction)


def _in_transactions(backend: Backend) -> TransactionalPublish:
    """The backend's way to write in a caller's transaction, or a clear refusal."""
    writer = transactional_publish_of(backend)
    if writer is None:
        raise ConfigurationError(
            f"{type(backend).__name__} cannot publish in a database transaction; use the "
            "PostgreSQL backend (postgresql://...), or publish after the commit"
        )
    return writer


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


# connection()'s arguments: batch, dashboard, user, audiences, transport, authenticated_at
_OpenArgs = tuple[bool, bool, "str | None", "Iterable[str] | None", str, "float | None"]


class _Opened(AbstractAsyncContextManager[Connection]):
    """What :meth:`Broadcaster.connection` returns: a slotted object rather than a generator
    and its frame, which every open connection keeps (about half a kilobyte less each)."""

    __slots__ = ("_args", "_broadcaster", "_conn")

    def __init__(self, broadcaster: Broadcaster, args: _OpenArgs) -> None:
        self._broadcaster = broadcaster
        self._args: _OpenArgs | None = args
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        args, self._args = self._args, None
        if args is None:
            raise RuntimeError("a connection() is entered once")
        batch, dashboard, user, audiences, transport, authenticated_at = args
        broadcaster = self._broadcaster
        await broadcaster.start()
        fanout = broadcaster._fanout
        hub = fanout.here()
        hub.fan_out()  # what reached this loop before us is before our first event
        acks = broadcaster._receipts.open(user, transport) if dashboard else None
        conn = self._conn = Connection(
            hub,
            broadcaster._counters,
            queue_size=broadcaster.queue_size,
            policy=broadcaster.slow_consumer,
            batch=batch,
            dashboard=dashboard,
            user=user,
            last_event_id=hub.last_id,
            max_bytes=broadcaster.queue_bytes,
            audiences=None if audiences is None else frozenset(audiences),
            transport=transport,
            acks=acks,
        )
        hub.join(conn)
        fanout.screen(conn, authenticated_at)  # revoked while its handshake ran?
        return conn

    async def __aexit__(self, *exc_info: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close(CloseReason.CLIENT_LEFT)  # leaves the fan-out, unless it already did
            broadcaster = self._broadcaster
            broadcaster._fanout.release(conn.loop)
            broadcaster._receipts.close(conn.acks)
