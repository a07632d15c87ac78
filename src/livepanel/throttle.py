"""Failed-authentication throttling per client address, without I/O.

:class:`AuthThrottle` counts the handshakes that ``auth`` refused, per client
address. After ``limit`` refusals within ``window`` seconds the address is
locked out for ``lockout`` seconds: the endpoint answers it 429 before its
credentials are even read. Guesses still being checked count as well, so a
burst of concurrent guesses cannot overshoot the limit, and a per-user-name
budget bounds guesses spread over many addresses. Memory is bounded by
``max_addresses``; records that are not locked out are forgotten first. See
``docs/security.md``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

from livepanel.errors import ConfigurationError

__all__ = ["AuthThrottle", "RefusalLog", "client_address"]

_MAX_KEY = 64  # a server may report any string as the client (proxy headers): bound it


def client_address(client: object) -> str:
    """The key an ASGI ``scope["client"]`` is throttled under.

    An IPv4 address is its own key; an IPv6 address counts as its ``/64``
    network, the block one host usually holds; anything else (a Unix socket,
    no client) is its text, cut to 64 characters, or ``"unknown"``.

    Example::

        >>> client_address(("192.0.2.7", 50312))
        '192.0.2.7'
        >>> client_address(("2001:db8:1:2::7", 443))
        '2001:db8:1:2::/64'
    """
    host = client[0] if isinstance(client, (tuple, list)) and client else None
    if not isinstance(host, str) or not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return host[:_MAX_KEY]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _Record:
    __slots__ = ("count", "locked_until", "pending", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.count = 0
        self.locked_until = 0.0
        self.pending = 0  # guesses being checked right now


class _Book:
    """Failure records by key, bounded: records that are not locked out are forgotten first.

    Counting records are kept in the order of their last failure, locked-out ones in the
    order their lockout began (so the first one ends first).
    """

    def __init__(self, limit: int, window: float, lockout: float, capacity: int) -> None:
        self.limit = limit
        self.window = window
        self.lockout = lockout
        self.capacity = capacity
        self.counting: OrderedDict[str, _Record] = OrderedDict()
        self.locked: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self.counting) + len(self.locked)

    def get(self, key: str, now: float) -> _Record | None:
        """The live record of ``key``; an ended lockout or window is settled first."""
        record = self.locked.get(key)
        if record is not None:
            if record.locked_until > now:
                return record
            del self.locked[key]  # the lockout is over: count afresh
            record.locked_until = 0.0
            self.counting[key] = record
        record = self.counting.get(key)
        if record is not None and now - record.started >= self.window and not record.pending:
            del self.counting[key]  # nothing left to remember
            return None
        return record

    def retry_after(self, key: str, now: float) -> float | None:
        record = self.get(key, now)
        if record is None or record.locked_until <= now:
            return None
        return record.locked_until - now

    def record(self, key: str, now: float) -> _Record:
        """``key``'s record, created when missing (and the book kept within capacity)."""
        record = self.get(key, now)
        if record is None:
            record = self.counting[key] = _Record(now)
            while len(self) > self.capacity:
                # unlocked records go first: a flood of new keys cannot lift a lockout
                (self.counting or self.locked).popitem(last=False)
        elif now - record.started >= self.window and not record.locked_until:
            record.started, record.count = now, 0  # a new window (kept while guesses pend)
        return record

    def fail(self, key: str, now: float) -> bool:
        """Count one failure; ``True`` when it locks ``key`` out."""
        record = self.record(key, now)
        if record.locked_until > now:
            return False  # a guess that was in flight when the lockout began
        if key in self.counting:
            self.counting.move_to_end(key)
        record.count += 1
        if record.count < self.limit:
            return False
        record.locked_until = now + self.lockout
        record.started = now
        record.count = 0
        self.counting.pop(key, None)
        self.locked[key] = record
        return True


class AuthThrottle:
    """Locks out a client address after too many failed authentications.

    Args:
        limit: refusals from one address within ``window`` seconds that lock it out.
        window: seconds over which refusals add up, counted from the first one.
        lockout: seconds a locked-out address is refused with 429.
        user_limit: refusals for one user name, from any addresses, within
            ``window`` that lock the name out for ``lockout`` seconds; while it
            is, only addresses that have not failed yet may try it (``None``:
            no per-name budget).
        max_addresses: addresses (and user names) remembered at most; the ones
            not locked out are forgotten first, the least recently failing first.
        clock: monotonic seconds (tests pass their own).

    The window starts with an address's first refusal, so it can make fewer
    than ``limit`` wrong guesses per ``window`` without being locked out. A
    success does not reset its count, so a valid account cannot be used to
    keep guessing another one. Guesses still being checked count too
    (:meth:`attempt`), so concurrent guesses cannot overshoot the limit.

    Example::

        >>> throttle = AuthThrottle(limit=2, window=60, lockout=60, clock=lambda: 0.0)
        >>> throttle.failed("192.0.2.1"), throttle.failed("192.0.2.1")
        (False, True)
        >>> throttle.retry_after("192.0.2.1")
        60.0
    """

    def __init__(
        self,
        limit: int = 20,
        window: float = 60.0,
        lockout: float = 60.0,
        *,
        user_limit: int | None = 100,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(limit, int) or limit < 1:
            raise ConfigurationError("AuthThrottle: limit must be an integer >= 1")
        if user_limit is not None and (not isinstance(user_limit, int) or user_limit < 1):
            raise ConfigurationError("AuthThrottle: user_limit must be an integer >= 1 or None")
        if window <= 0 or lockout <= 0:
            raise ConfigurationError("AuthThrottle: window and lockout must be > 0 seconds")
        if max_addresses < 1:
            raise ConfigurationError("AuthThrottle: max_addresses must be >= 1")
        self.limit = limit
        self.user_limit = user_limit
        self.window = float(window)
        self.lockout = float(lockout)
        self.max_addresses = max_addresses
        self._clock = clock
        self._addresses = _Book(limit, self.window, self.lockout, max_addresses)
        self._users = _Book(user_limit or 1, self.window, self.lockout, max_addresses)

    def retry_after(self, address: str, user: str | None = None) -> float | None:
        """Seconds until ``address`` may try again, or ``None`` when it is not locked out.

        With ``user``: also while that user name is locked out, for an address
        that has failed before within the window.
        """
        now = self._clock()
        wait = self._addresses.retry_after(address, now)
        if wait is not None or user is None or self.user_limit is None:
            return wait
        user_wait = self._users.retry_after(_user_key(user), now)
        if user_wait is None:
            return None
        record = self._addresses.get(address, now)
        # an address that has not failed yet may try: the real user is not locked out with it
        return user_wait if record is not None and (record.count or record.pending) else None

    def attempt(self, address: str, user: str | None = None) -> float | None:
        """Start checking a guess from ``address``: ``None`` when it may be checked now.

        The guess counts at once, as if it had failed, until :meth:`finished`
        says how it went; when the failures and the guesses in flight reach
        ``limit`` the guess is not checked, and the seconds to wait come back.
        """
        wait = self.retry_after(address, user)
        if wait is not None:
            return wait
        now = self._clock()
        record = self._addresses.record(address, now)
        if record.count + record.pending >= self.limit:
            return 1.0  # as many guesses in flight as may still fail: wait for their answers
        record.pending += 1
        return None

    def finished(self, address: str, user: str | None = None, *, refused: bool) -> bool:
        """End a guess begun with :meth:`attempt`; ``True`` when its refusal locks ``address``."""
        record = self._addresses.get(address, self._clock())
        if record is not None and record.pending:
            record.pending -= 1
        return self.failed(address, user) if refused else False

    def failed(self, address: str, user: str | None = None) -> bool:
        """Count one refused authentication; ``True`` when it locks ``address`` out."""
        now = self._clock()
        if user is not None and self.user_limit is not None:
            self._users.fail(_user_key(user), now)
        return self._addresses.fail(address, now)

    def __len__(self) -> int:
        """Addresses remembered now."""
        return len(self._addresses)

    def __repr__(self) -> str:
        return (
            f"AuthThrottle(limit={self.limit}, window={self.window:g}, "
            f"lockout={self.lockout:g}, addresses={len(self)})"
        )


def _user_key(user: str) -> str:
    """A bounded key for a user name an attacker chose."""
    return (
        user
        if len(user) <= _MAX_KEY
        else hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()
    )


class RefusalLog:
    """Decides which refused handshakes get a log line: one per address and ``interval``.

    The first refusal of an address is logged; the next ones within
    ``interval`` seconds are only counted, and the first refusal after the
    interval is logged with that count. Memory is bounded by ``max_addresses``.

    Args:
        interval: seconds between two lines about one address.
        max_addresses: addresses remembered at most (the least recently logged go first).
        clock: monotonic seconds (tests pass their own).

    Example::

        >>> log = RefusalLog(interval=60, clock=lambda: 0.0)
        >>> log.note("192.0.2.1"), log.note("192.0.2.1"), log.note("192.0.2.1")
        (0, None, None)
    """

    def __init__(
        self,
        interval: float = 60.0,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or max_addresses < 1:
            raise ConfigurationError("RefusalLog: interval must be > 0, max_addresses >= 1")
        self.interval = float(interval)
        self.max_addresses = max_addresses
        self._clock = clock
        self._seen: OrderedDict[str, list[float]] = OrderedDict()  # address -> [logged at, quiet]

    def note(self, address: str) -> int | None:
        """Count a refusal: ``None`` to log nothing, else how many went unlogged before it."""
        now = self._clock()
        seen = self._seen.get(address)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return None
        earlier = int(seen[1]) if seen is not None else 0
        self._seen[address] = [now, 0]
        self._seen.move_to_end(address)
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)
        return earlier
