"""Who is connected to one broadcaster in this process, counted once.

The fan-out (:mod:`livepanel.hub`) tells the :class:`Census` when a dashboard
joins or leaves, on whichever event loop it lives; ``Broadcaster.stats()``,
``connection_count``, presence, health and metrics read it. A connection's
user is counted under its name (``""`` for an anonymous one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Census", "presence_view"]


def presence_view(counts: dict[str, int]) -> dict[str, Any]:
    """Connections by user as ``Broadcaster.presence()`` shows them: named users, and the total
    (anonymous connections, under ``""``, count in the total only).

    Example::

        >>> presence_view({"alice": 2, "": 1})
        {'users': [{'user': 'alice', 'connections': 2}], 'connections': 3}
    """
    users = [{"user": u, "connections": n} for u, n in sorted(counts.items()) if u and n > 0]
    return {"users": users, "connections": sum(n for n in counts.values() if n > 0)}


class Census:
    """Dashboards by transport and by user; thread-safe.

    Args:
        on_users_changed: called after a join or a leave, on the thread that made it.

    Example::

        >>> census = Census()
        >>> census.joined("alice", "websocket")
        >>> census.connections, census.users
        (1, {'alice': 1})
    """

    __slots__ = ("_by_transport", "_connections", "_lock", "_on_users_changed", "_users")

    def __init__(self, on_users_changed: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._connections = 0
        self._by_transport: dict[str, int] = {}
        self._users: dict[str, int] = {}
        self._on_users_changed = on_users_changed

    def joined(self, user: str | None, transport: str) -> None:
        """A dashboard of ``user`` opened on ``transport``."""
        self._change(user, transport, +1)

    def left(self, user: str | None, transport: str) -> None:
        """A dashboard of ``user`` on ``transport`` closed."""
        self._change(user, transport, -1)

    def _change(self, user: str | None, transport: str, delta: int) -> None:
        name = user or ""
        with self._lock:
            self._connections += delta
            self._by_transport[transport] = self._by_transport.get(transport, 0) + delta
            count = self._users.get(name, 0) + delta
            if count > 0:
                self._users[name] = count
            else:
                self._users.pop(name, None)
        if self._on_users_changed is not None:
            self._on_users_changed()

    @property
    def connections(self) -> int:
        """Live dashboards, on every event loop of this process."""
        return self._connections

    @property
    def by_transport(self) -> dict[str, int]:
        """Live dashboards by transport (``"websocket"``, ``"sse"``): a copy."""
        with self._lock:
            return dict(self._by_transport)

    @property
    def users(self) -> dict[str, int]:
        """Live dashboards by user (``""``: anonymous): a copy."""
        with self._lock:
            return dict(self._users)
