"""Every event loop's hub of one broadcaster: where the backend's new events go.

:class:`Fanout` keeps one :class:`~livepanel.hub.Hub` per event loop that has
connections, the stream's newest id, and the JSON of recent events that
replays share. The backend's delivery callback lands here, on any thread:
each event is serialized once into a :class:`~livepanel.outbox.Frame` and
posted to every hub, in stream order.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from livepanel.census import Census
from livepanel.connection import CloseReason, Connection
from livepanel.events import Event
from livepanel.hub import Hub, Resubscribe
from livepanel.outbox import Frame
from livepanel.revocations import Revocations

__all__ = ["Fanout", "RecentTexts", "disconnect_order"]


def disconnect_order(
    user: str | None, audiences: frozenset[str] | None, code: int, at: float | None = None
) -> dict[str, Any]:
    """The control message ``Broadcaster.disconnect()`` sends every worker (:meth:`Fanout.obey`);
    ``at``: when it was given (Unix time), for the tickets issued before it.

    Raises:
        ValueError: neither a user nor audiences, or a close code a server may not send.

    Example::

        >>> disconnect_order("alice", None, 1008)
        {'disconnect': {'user': 'alice', 'audience': [], 'code': 1008}}
    """
    if user is None and audiences is None:
        raise ValueError("disconnect() needs a user, an audience or both")
    if code not in (1000, 1001, 1008, 1011, 1013) and not 4000 <= code <= 4999:
        raise ValueError(f"close code {code} is not one a server may send")
    order: dict[str, Any] = {"user": user, "audience": sorted(audiences or ()), "code": code}
    if at is not None:
        order["at"] = at
    return {"disconnect": order}


class RecentTexts:
    """The JSON of the newest events, shared by every replay instead of encoded per connection.

    Example::

        >>> texts = RecentTexts(limit=1000)
        >>> event = Event("agent.status", {"agentId": "a1"}, id="e:1")
        >>> texts.remember([Frame(event, '{"cached": true}')])
        >>> texts.text_of(event)
        '{"cached": true}'
    """

    __slots__ = ("_ids", "_limit", "_texts")

    def __init__(self, limit: int) -> None:
        self._texts: dict[str, str] = {}
        self._ids: deque[str] = deque()
        self._limit = limit

    def remember(self, frames: list[Frame]) -> None:
        """Keep the text of ``frames`` (the fan-out's lock is held)."""
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


class Fanout:
    """The hubs of one broadcaster, one per event loop, and the stream's head.

    Args:
        census: told when a dashboard joins or leaves (through each hub).
        resubscribe: what a connection's ``subscribe`` calls.
        texts: where the JSON of delivered events is kept for replays.

    Example, what the broadcaster does::

        fanout = Fanout(census, resume.resubscribe, texts)
        fanout.deliver(events)  # the backend's callback, any thread
        hub = fanout.here()  # this loop's hub, for a new connection
    """

    __slots__ = ("_hubs", "_lock", "census", "head_id", "resubscribe", "revocations", "texts")

    def __init__(self, census: Census, resubscribe: Resubscribe, texts: RecentTexts) -> None:
        self.census = census
        self.resubscribe = resubscribe
        self.texts = texts
        self._lock = threading.Lock()  # the hubs and the head id
        self._hubs: dict[asyncio.AbstractEventLoop, Hub] = {}
        self.head_id = ""  # the newest event id delivered in this process
        self.revocations = Revocations()  # for handshakes in flight and tickets issued before

    def started_at(self, head: str) -> None:
        """The backend started with ``head`` as the stream's newest id."""
        with self._lock:
            self.head_id = head

    def deliver(self, events: Sequence[Event]) -> None:
        """New events in stream order (any thread, one call at a time): to every loop."""
        frames = [Frame(event, event.to_json()) for event in events]  # serialized once
        with self._lock:
            self.head_id = events[-1].id or self.head_id
            self.texts.remember(frames)
            hubs = list(self._hubs.values())
            for hub in hubs:
                hub.post(frames)
        for hub in hubs:
            if not hub.kick():
                self._forget(hub)

    def here(self) -> Hub:
        """This loop's hub, created (at the stream's head) on first use."""
        loop = asyncio.get_running_loop()
        hub = self._hubs.get(loop)
        if hub is None:
            with self._lock:
                hub = self._hubs.get(loop)
                if hub is None:
                    hub = self._hubs[loop] = Hub(loop, self.head_id, self.census, self.resubscribe)
        return hub

    def release(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drop ``loop``'s hub once its last connection left (a loop may close after that)."""
        with self._lock:
            hub = self._hubs.get(loop)
            if hub is not None and not hub.connections:
                del self._hubs[loop]

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

    def hubs(self) -> list[Hub]:
        """The hubs now, a copy."""
        with self._lock:
            return list(self._hubs.values())

    def obey(self, message: dict[str, Any]) -> int:
        """Close the dashboards a ``{"disconnect": {"user", "audience", "code", "at"}}`` order
        names (from this process or, through the backend, another); return how many. The
        order is remembered (:attr:`revocations`) for the handshakes still in flight.

        A malformed order (another version, a hostile stream entry) closes nothing.
        """
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
        given = order.get("at")
        if not isinstance(given, (int, float)) or given != given:  # absent (older), or NaN
            given = None
        self.revocations.record(user, who, code, given)  # first: a joining connection checks it
        return sum(hub.revoke(user, who, code) for hub in self.hubs())

    def screen(self, conn: Connection, authenticated_at: float | None) -> None:
        """Close a dashboard joining now if an order heard since its handshake began
        (``authenticated_at``, monotonic) names it: it was in flight when the order came."""
        if authenticated_at is None or not conn.dashboard:
            return
        code = self.revocations.heard_since(authenticated_at, conn.user, conn.audiences)
        if code is not None:
            conn.revoke(code)

    def close_all(self, reason: CloseReason) -> None:
        """Close every connection on every loop with ``reason``."""
        for hub in self.hubs():
            hub.close_all(reason)

    def subscribers(self) -> int:
        """Connections and in-process subscriptions, on every loop."""
        return sum(len(hub.connections) for hub in self.hubs())
