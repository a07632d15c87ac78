"""The revocation orders this process has heard, for what they could not close when given.

``Broadcaster.disconnect()`` closes the connections that are open, on every
worker. Two things escape it: a handshake that authenticated before the order
but joins the fan-out after it, and a ticket issued before the order but used
after it. :class:`Revocations` remembers the orders (this process's and, through
the backend, the other workers'), so that the first is closed as it joins and
the second is refused. It has no I/O and no dependency; see ``docs/security.md``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["MAX_REVOCATIONS", "Revocations"]

MAX_REVOCATIONS = 4096
"""Orders remembered at most; tickets issued before a forgotten one are refused (fail closed)."""

_Order = tuple[float, float, str | None, frozenset[str], int]  # heard, given, user, audience, code


class Revocations:
    """The revocation orders heard so far, newest last, bounded; thread-safe.

    Args:
        capacity: orders remembered at most.
        clock: monotonic seconds, when an order is heard (tests pass their own).
        wall: Unix time, when an order without one is given (tests pass their own).

    Example::

        >>> revocations = Revocations(clock=lambda: 10.0, wall=lambda: 1000.0)
        >>> revocations.record("alice", frozenset(), 1008)
        >>> revocations.heard_since(5.0, "alice", None)
        1008
        >>> revocations.given_since(999.0, "bob", frozenset({"team:ops"}))
        False
    """

    def __init__(
        self,
        capacity: int = MAX_REVOCATIONS,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._orders: deque[_Order] = deque()
        self._capacity = capacity
        self._clock = clock
        self._wall = wall
        self._forgotten_given = float("-inf")  # the newest order dropped for room

    def record(
        self, user: str | None, audiences: frozenset[str], code: int, given: float | None = None
    ) -> None:
        """One order heard now: close ``user``'s connections and those of ``audiences``
        with ``code``; ``given`` is when it was given (Unix time; now when ``None``)."""
        when = self._wall() if given is None else given
        with self._lock:
            self._orders.append((self._clock(), when, user, audiences, code))
            while len(self._orders) > self._capacity:
                self._forgotten_given = max(self._forgotten_given, self._orders.popleft()[1])

    def heard_since(
        self, moment: float, user: str | None, audiences: frozenset[str] | None
    ) -> int | None:
        """The close code of the newest order heard at or after ``moment`` (monotonic) that
        names ``user`` or one of ``audiences``; ``None`` when none does."""
        with self._lock:
            for heard, _, named, who, code in reversed(self._orders):
                if heard < moment:
                    return None
                if _names(named, who, user, audiences):
                    return code
        return None

    def given_since(self, issued: float, user: str, audiences: frozenset[str] | None) -> bool:
        """Whether an order given at or after ``issued`` (Unix time) names ``user`` or one of
        ``audiences``, or may have been forgotten: a credential issued then is revoked."""
        with self._lock:
            if issued <= self._forgotten_given:
                return True
            return any(
                given >= issued and _names(named, who, user, audiences)
                for _, given, named, who, _ in self._orders
            )

    def __len__(self) -> int:
        return len(self._orders)


def _names(
    named: str | None, who: frozenset[str], user: str | None, audiences: frozenset[str] | None
) -> bool:
    """Whether an order for ``named``/``who`` covers ``user`` with ``audiences`` (a connection
    that sees everything belongs to no audience)."""
    if named is not None and named == user:
        return True
    return bool(who) and audiences is not None and not who.isdisjoint(audiences)
