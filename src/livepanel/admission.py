"""Admitting new connections at a steady rate, and telling the excess when to come back.

:class:`AdmissionLimiter` is the worker's admission budget, without I/O: a
handshake asks :meth:`~AdmissionLimiter.admit` with its key (the user and the
client address) and the time, and is either admitted or told how many whole
seconds to wait (``Retry-After``). Two schedules make it up:

- the *accepts*: a token bucket in its GCRA form (``rate`` per second, at
  most ``burst`` at once) that every admission passes, so no window of ``t``
  seconds holds more than ``rate * t + burst`` of them, whoever comes when
  (plus a tenth of the rate for clients at their promised time, to whom
  newcomers yield: they were told to wait once already);
- the *promises*: a handshake refused while others wait is promised a return
  time, and its hint is that time. Hints are whole seconds and clients add a
  jitter of a fifth of the hint (at least 0.25 s), so the clients told ``n``
  seconds at one instant come back together within that jitter: each second
  of return times is booked only up to what the accepts can take from such a
  bunch (:func:`bunch_capacity`), and the next refused client is told the
  first second with room. A herd of 1,000 is told to come back over about
  ``1000 / rate`` seconds, not all after one. When the key comes back at (or
  after) its time it takes the next token; should the bucket be empty at that
  moment, it is told a moment more and keeps its place. Promises reserve no
  tokens: behind a load balancer a client told by one worker may come back
  through another, and capacity held for it there would be wasted.

A client that ignores its hint gains nothing: coming back early it is told
the time left (even when a token is free), and a key holds at most ``per_key`` promises at once, so
hammering cannot fill the queue ahead of everyone else. Further handshakes of
a key at that bound (many dashboards behind one address under one user) are
spread at random past the key's promises, without a promise of their own. A
promise nobody claims lapses a while after its time (:func:`claim_grace`).
Memory is bounded by ``rate * max_wait`` promises. See
``docs/staying-live.md`` ("Rolling deploys").
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Hashable

from livepanel.errors import ConfigurationError

__all__ = [
    "HOLD",
    "AdmissionLimiter",
    "bunch_capacity",
    "claim_grace",
    "client_jitter",
    "default_burst",
]

HOLD = 0.5
"""Seconds an endpoint holds a handshake that the bucket's next token is at most this far from,
instead of refusing it (``LivePanelApp``'s limiter; the accept then comes on time)."""

_EPSILON = 1e-9  # float slack when comparing a slot with the clock
_SHORTEST = 0.01  # the shortest hint: a close reason says hundredths


def default_burst(rate: float) -> int:
    """The burst an admission ``rate`` gets unless told: a tenth of a second's worth, at least 1,
    so that no second holds more than ``1.1 * rate`` accepts.

    Example::

        >>> default_burst(100.0)
        10
        >>> default_burst(2.0)
        1
    """
    return max(1, round(rate / 10))


def client_jitter(hint: float) -> float:
    """The most a client adds to a hint of ``hint`` seconds: a fifth of it, at least 0.25 s.

    Example::

        >>> client_jitter(10.0)
        2.0
    """
    return max(0.25, 0.2 * hint)


def bunch_capacity(rate: float, burst: int, hint: int) -> int:
    """How many clients told ``hint`` seconds at one instant the accepts take without
    refusing one again: the burst, plus the rate over the spread of their jitter, with a
    tenth left for chance; at most a second's worth of the rate, at least one.

    Example::

        >>> [bunch_capacity(100.0, 10, n) for n in (1, 2, 5)]
        [31, 45, 99]
    """
    room = 0.9 * (burst + rate * client_jitter(hint))
    return max(1, min(math.floor(rate), math.floor(room)))


def claim_grace(hint: float) -> float:
    """Seconds after its slot a promise stays claimable: the client's whole-second rounding
    (up to 1 s) and its jitter (up to a fifth of the hint), with room to spare.

    Example::

        >>> claim_grace(10.0)
        5.0
    """
    return 2.0 + 0.3 * hint


class _Key:
    """One key's promised slots (oldest first) and how often it was refused beyond them."""

    __slots__ = ("overflow", "slots")

    def __init__(self) -> None:
        self.slots: deque[tuple[float, float]] = deque()  # (slot, lapses at)
        self.overflow = 0


class AdmissionLimiter:
    """A worker's admission budget: ``rate`` handshakes per second, ``burst`` at once.

    Args:
        rate: admissions per second (> 0).
        burst: admissions that may follow one another without waiting (>= 1);
            :func:`default_burst` by default.
        per_key: promises one key holds at once (>= 1); ``burst`` by default.
        max_wait: the longest hint it gives, in seconds; the promises it keeps
            are bounded by ``rate * max_wait``.
        hold: a handshake the bucket holds back by at most this many seconds is
            admitted with :attr:`delay` set, to be accepted then, rather than
            told to come back in a whole second (the server's event loop hands
            handshakes over in clumps; a short hold evens them out).
        rng: where the spread of a key's handshakes beyond ``per_key`` comes from.

    Raises:
        ConfigurationError: a rate or ``max_wait`` that is not positive, or a
            ``burst``/``per_key`` below 1.

    Example::

        >>> limiter = AdmissionLimiter(rate=10.0, burst=1)
        >>> limiter.admit("alice", now=0.0) is None
        True
        >>> limiter.admit("bob", now=0.0)
        1
        >>> limiter.admit("bob", now=1.1) is None
        True
    """

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        *,
        per_key: int | None = None,
        max_wait: float = 60.0,
        hold: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not rate > 0 or not max_wait > 0 or not 0 <= hold < 1:
            raise ConfigurationError(
                "AdmissionLimiter: rate (handshakes per second) and max_wait must be > 0, "
                "hold >= 0 and below a second"
            )
        burst = default_burst(rate) if burst is None else burst
        per_key = burst if per_key is None else per_key
        if burst < 1 or per_key < 1:
            raise ConfigurationError("AdmissionLimiter: burst and per_key must be >= 1")
        self.rate = float(rate)
        self.burst = burst
        self.per_key = per_key
        self.max_wait = float(max_wait)
        self._interval = 1.0 / self.rate
        self._tolerance = (burst - 1) * self._interval
        # a client at its promised time may go a tenth of a second's worth further than a
        # newcomer: it was told to wait once, newcomers yield to it
        self._promised_tolerance = self._tolerance + math.floor(self.rate / 10) * self._interval
        self._capacity = max(1, math.ceil(self.rate * self.max_wait))
        self._rng = rng or random.Random()
        self._tat = -math.inf  # the accepts' theoretical arrival time (GCRA)
        self._booked: dict[int, int] = {}  # return second -> promises booked there
        self._bins: deque[tuple[int, int]] = deque()  # the booked seconds, oldest first
        self._keys: dict[Hashable, _Key] = {}
        self._order: list[tuple[float, int, Hashable]] = []  # a heap of (lapses at, n, key)
        self._sequence = itertools.count()
        self._promised = 0
        self.hold = float(hold)
        self.delay = 0.0
        """After :meth:`admit` admitted a handshake: seconds to hold it before accepting it
        (the bucket's next token is that far off; at most ``hold``)."""
        self.admitted = 0
        """Handshakes admitted so far."""
        self.refused = 0
        """Handshakes refused with a hint so far (probes not counted)."""

    @property
    def promised(self) -> int:
        """Promised slots not yet claimed nor lapsed."""
        return self._promised

    def admit(self, key: Hashable, now: float) -> float | None:
        """Admit a handshake of ``key`` at ``now`` (``None``), or say how many seconds it waits.

        Example::

            wait = limiter.admit(("alice", "192.0.2.7"), time.monotonic())
            if wait is not None:
                ...  # 429 with Retry-After: ceil(wait)
        """
        self._sweep(now)
        entry = self._keys.get(key)
        if entry is not None and entry.slots and entry.slots[0][0] <= now + _EPSILON:
            wait = self._tat - self._promised_tolerance - now
            if wait > self.hold + _EPSILON:  # bunched, beyond what a handshake is held for
                slot, _ = entry.slots[0]
                told = max(1, math.ceil(wait))
                lapses = now + told + claim_grace(told)
                entry.slots[0] = (slot, lapses)
                heapq.heappush(self._order, (lapses, next(self._sequence), key))
                self._book_second(math.floor(now + told), told)  # it returns then: count it
                return self._refuse(wait)
            entry.slots.popleft()
            self._promised -= 1
            if not entry.slots:
                del self._keys[key]
            self._accept(now, max(0.0, wait))
            return None
        wait = self._tat - self._tolerance - now
        if (entry is None or not entry.slots) and wait <= self.hold + _EPSILON:
            self._accept(now, max(0.0, wait))  # no promise of its own pending: a token
            return None
        if entry is not None and len(entry.slots) >= self.per_key:
            # early (it ignored its hint), or one of many behind the same key: no new promise
            entry.overflow += 1
            spread = self._rng.uniform(0.0, entry.overflow * self._interval)
            return self._refuse(entry.slots[0][0] - now + spread)
        hint = self._book(now) if self._promised < self._capacity else None
        if hint is None:
            return self._refuse(self.max_wait)  # every second up to max_wait is booked
        if entry is None:
            entry = self._keys[key] = _Key()
        lapses = now + hint + claim_grace(hint)
        entry.slots.append((now + hint, lapses))
        heapq.heappush(self._order, (lapses, next(self._sequence), key))
        self._promised += 1
        return self._refuse(hint)

    def _book(self, now: float) -> int | None:
        """The first whole-second wait whose return second has room, booked; ``None`` if
        none has up to ``max_wait``."""
        bins = self._bins
        while bins and bins[0][0] < now - 2.0:  # seconds long past: nobody returns there
            del self._booked[bins.popleft()[0]]
        first = max(1, math.ceil(self._tat - self._tolerance - now - _EPSILON))
        for hint in range(first, max(first, math.floor(self.max_wait)) + 1):
            second = math.floor(now + hint)
            if self._booked.get(second, 0) < bunch_capacity(self.rate, self.burst, hint):
                self._book_second(second, hint)
                return hint
        return None

    def _book_second(self, second: int, hint: int) -> None:
        booked = self._booked.get(second, 0)
        if not booked:
            self._bins.append((second, hint))
        self._booked[second] = booked + 1

    def peek(self, key: Hashable, now: float) -> float | None:
        """What :meth:`admit` would say, without taking a token or making a promise: ``None``
        when a handshake would be admitted now, else a wait (an HTTP probe's answer).

        Example::

            wait = limiter.peek(("alice", "192.0.2.7"), time.monotonic())
        """
        self._sweep(now)
        entry = self._keys.get(key)
        if entry is not None and entry.slots:
            first = entry.slots[0][0]
            if first <= now + _EPSILON:
                if self._conforms(now, self._promised_tolerance):
                    return None
                return self._clip(self._tat - self._promised_tolerance - now)
            return self._clip(first - now)
        if self._conforms(now, self._tolerance):
            return None
        latest = max((second for second, _ in self._bins), default=now)
        return self._clip(max(self._tat - self._tolerance, latest + 1.0) - now)

    def _conforms(self, now: float, tolerance: float) -> bool:
        return now + _EPSILON >= self._tat - tolerance

    def _accept(self, now: float, delay: float) -> None:
        """Take the token due ``delay`` seconds from ``now`` (the bucket's next, when held)."""
        self._tat = max(self._tat, now + delay) + self._interval
        self.delay = delay
        self.admitted += 1

    def _refuse(self, wait: float) -> float:
        self.refused += 1
        return self._clip(wait)

    def _clip(self, wait: float) -> float:
        return min(self.max_wait, max(_SHORTEST, wait))

    def _sweep(self, now: float) -> None:
        """Drop the promises whose grace is over (each key's oldest first)."""
        order = self._order
        while order and order[0][0] < now:
            _, _, key = heapq.heappop(order)
            entry = self._keys.get(key)
            if entry is None:
                continue
            while entry.slots and entry.slots[0][1] < now:
                entry.slots.popleft()
                self._promised -= 1
            if not entry.slots:
                del self._keys[key]
