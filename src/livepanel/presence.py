"""Presence: who is connected, across every worker, and a ``presence.changed`` event.

Each process counts its connections by user (``Broadcaster.census.users``, counted
from the connections themselves). With :func:`track`, a process with connections writes its
counts through the backend's worker presence
(:class:`~livepanel.backends.base.WorkerPresence`; in Redis, under a key of
its own) that expires after ``expiry`` seconds and is rewritten well before,
so a worker that dies (even with ``SIGKILL``) drops out of :func:`collect`
within ``expiry`` seconds. With a backend without worker presence, each
process sees its own connections only.

``announce=True`` also publishes the built-in event ``presence.changed``
(:class:`PresenceChanged`) whenever the view across workers changes, at most
once a second across all workers (the backend's turn to announce, in Redis a
short lock, and no event when the view equals the last one announced). A
dashboard shows who else is looking by subscribing to it. User names are what
the endpoint counts connections by (see ``LivePanelApp``); anonymous
connections count in ``connections`` only.

The view names every user of every tenant, so ``presence.changed`` is published
to the audience :data:`PRESENCE_AUDIENCE` unless ``track(audience=...)`` names
another: connections that see everything (audiences ``None``) receive it, a
restricted connection only when the application gives it that audience string.
Being an audience, it holds for live events, replays and every worker alike
(``docs/security.md``, "Presence and tenants").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from livepanel.backends.base import worker_presence_of
from livepanel.census import presence_view
from livepanel.events import Event, NonNegative, event_type
from livepanel.mounting import Mounted, broadcaster_of
from livepanel.observer import Observer

if TYPE_CHECKING:
    from livepanel.broadcaster import Broadcaster

__all__ = [
    "ANNOUNCE_INTERVAL",
    "PRESENCE_AUDIENCE",
    "PresenceChanged",
    "PresenceTracker",
    "PresenceUser",
    "collect",
    "track",
]

logger = logging.getLogger("livepanel")

ANNOUNCE_INTERVAL = 1.0
"""Seconds between two ``presence.changed`` events, at least, across all workers."""

PRESENCE_AUDIENCE = "livepanel:presence"
"""The audience of ``presence.changed`` by default: connections that see everything get it,
and a restricted connection only when ``audiences()`` returns this string among its own."""


@dataclasses.dataclass(frozen=True)
class PresenceUser:
    """One user in a presence view: their name and how many connections they hold.

    Example::

        PresenceUser(user="alice", connections=2)  # {"user": "alice", "connections": 2}
    """

    user: str
    connections: Annotated[int, NonNegative()]


@event_type("presence.changed")
class PresenceChanged:
    """Who is connected changed: event type ``presence.changed``.

    ``users`` is sorted by name; ``connections`` counts every connection,
    anonymous ones included.

    Example::

        PresenceChanged(users=[PresenceUser(user="alice", connections=1)], connections=1)
    """

    type: ClassVar[str]
    users: list[PresenceUser]
    connections: Annotated[int, NonNegative()]


class PresenceTracker(Observer):
    """Keeps one process's presence in the backend and announces changes (see :func:`track`).

    Example::

        tracker = track(broadcaster, announce=True)
        await tracker.view()  # {"users": [...], "connections": 3}
    """

    def __init__(
        self,
        broadcaster: Broadcaster,
        *,
        announce: bool,
        expiry: float,
        audience: Iterable[str] | str | None = PRESENCE_AUDIENCE,
    ) -> None:
        self.broadcaster = broadcaster
        self.announce = announce
        self.audience = audience if audience is None or isinstance(audience, str) else set(audience)
        """Who receives ``presence.changed`` (``None``: every connection)."""
        self.expiry = expiry
        self.worker = secrets.token_hex(6)
        self._presence = worker_presence_of(broadcaster.backend)
        self.last_announced: dict[str, Any] | None = None  # as last seen in the stream
        self._dirty: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_time = -ANNOUNCE_INTERVAL

    # ------------------------------------------------------------------ hooks

    def users_changed(self) -> None:
        """``Broadcaster.census.users`` changed (on the loop's thread): write and announce soon."""
        if not self._running():
            return  # closed, or not started: connections come after a start
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            self._dirty = asyncio.Event()
            self._task = loop.create_task(self._run(), name="livepanel-presence")
        assert self._dirty is not None
        self._dirty.set()

    def fanned_out(self, events: Sequence[Event]) -> None:
        """Remember the last ``presence.changed`` any worker announced."""
        for event in events:
            if event.type == "presence.changed":
                self.last_announced = dict(event.payload)

    # ------------------------------------------------------------------ the view

    async def presence_view(self) -> dict[str, Any]:
        """What ``Broadcaster.presence()`` answers once this tracker watches it: :meth:`view`."""
        return await self.view()

    async def view(self) -> dict[str, Any]:
        """The presence across every worker: ``{"users": [...], "connections": n}``."""
        if self._presence is None:
            return presence_view(self.broadcaster.census.users)
        return presence_view(await self._presence.read_presence())

    async def _write(self) -> None:
        if self._presence is not None:
            await self._presence.write_presence(
                self.worker, dict(self.broadcaster.census.users), self.expiry
            )

    async def _may_announce(self) -> bool:
        """Take the announcement slot for the next second: the lock across workers."""
        if self._presence is None:
            return True
        return await self._presence.claim_announcement(self.worker, ANNOUNCE_INTERVAL)

    # ------------------------------------------------------------------ the task

    async def _run(self) -> None:
        """While this process has connections: rewrite its key every ``expiry / 3`` seconds
        and on every change, and announce what changed. Ends once nothing is left to do."""
        loop = asyncio.get_running_loop()
        dirty = self._dirty
        assert dirty is not None
        pending = False  # a view to compare with the last announced one
        while True:
            timeout = self.expiry / 3
            try:
                changed = dirty.is_set()
                dirty.clear()
                await self._write()
                # a change here, or a worker that vanished: look at the view each round
                pending = self.announce and (
                    pending or changed or bool(self.broadcaster.census.users)
                )
                if pending:
                    wait = self._last_time + ANNOUNCE_INTERVAL - loop.time()
                    if wait <= 0:
                        pending = await self._announce()
                        wait = ANNOUNCE_INTERVAL
                    if pending:
                        timeout = min(timeout, max(0.05, wait))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away, or stopped: never crash the app
                if not self._running():
                    return  # the broadcaster was closed
                logger.warning("livepanel: presence not updated (%s); retrying", exc)
                timeout = 1.0
            if not (self.broadcaster.census.users or pending or dirty.is_set()):
                return  # nothing to keep alive; the next connection starts a new round
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(dirty.wait(), timeout)

    def _running(self) -> bool:
        """The broadcaster is started and not closed (publishing must not restart it)."""
        return self.broadcaster.backend_loop is not None

    async def _announce(self) -> bool:
        """Publish ``presence.changed`` if the view changed; return True when still pending."""
        view = await self.view()
        if not self._running():
            return False
        if view == self.last_announced:
            return False
        if not await self._may_announce():
            return True  # another worker announced within the second: look again after it
        self._last_time = asyncio.get_running_loop().time()
        self.last_announced = view
        self.broadcaster.publish(PresenceChanged.type, view, audience=self.audience)
        return False


def track(
    broadcaster: Broadcaster | Mounted[Broadcaster],
    *,
    announce: bool = False,
    expiry: float = 15.0,
    audience: Iterable[str] | str | None = PRESENCE_AUDIENCE,
) -> PresenceTracker:
    """Keep this process's presence where every worker sees it; call it in every worker.

    Args:
        broadcaster: the broadcaster whose connections count, or the
            ``LivePanelApp`` or ``LivePanelMiddleware`` serving it.
        announce: publish ``presence.changed`` when the view changes (at most
            once a second across workers).
        expiry: seconds after which a dead worker's connections stop counting.
        audience: who receives ``presence.changed``, which names every connected
            user: by default :data:`PRESENCE_AUDIENCE`, so only connections that see
            everything, and those the application gives that string; another
            audience (``"team:ops"``) for a group you choose; ``None`` for every
            connection (an application with one tenant only).

    Raises:
        ValueError: ``expiry`` is not positive, or ``audience`` is an empty set.

    Returns:
        The tracker; ``await broadcaster.presence()`` reads through it.

    Example::

        from livepanel.presence import track

        track(broadcaster, announce=True)  # presence.changed to PRESENCE_AUDIENCE
        await broadcaster.presence()
        # {"users": [{"user": "alice", "connections": 2}], "connections": 2}
    """
    if expiry <= 0:
        raise ValueError("track: expiry must be > 0 seconds")
    if audience is not None and not (audience if isinstance(audience, str) else set(audience)):
        raise ValueError(
            "track: audience is empty, so presence.changed would reach nobody; name an "
            "audience, or leave the default PRESENCE_AUDIENCE"
        )
    broadcaster = broadcaster_of(broadcaster)
    tracker = PresenceTracker(broadcaster, announce=announce, expiry=expiry, audience=audience)
    broadcaster.observe(tracker)
    return tracker


async def collect(broadcaster: Broadcaster) -> dict[str, Any]:
    """``Broadcaster.presence()``: the users connected to every worker and their connections.

    Without :func:`track`, only this process's connections count.

    Example::

        view = await collect(broadcaster)
        names = [entry["user"] for entry in view["users"]]
    """
    return await broadcaster.presence()
