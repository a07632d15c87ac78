"""Failed-authentication throttling per client address, without I/O.

:class:`AuthThrottle` counts the handshakes that ``auth`` refused, per client
address. After ``limit`` refusals within ``window`` seconds the address is
locked out for ``lockout`` seconds: the endpoint answers it 429 before its
credentials are even read. Memory is bounded by ``max_addresses``; the address
that failed least recently is forgotten first. See ``docs/security.md``.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

from livepanel.errors import ConfigurationError

__all__ = ["AuthThrottle", "client_address"]

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
    __slots__ = ("count", "locked_until", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.count = 0
        self.locked_until = 0.0


class AuthThrottle:
    """Locks out a client address after too many failed authentications.

    Args:
        limit: refusals from one address within ``window`` seconds that lock it out.
        window: seconds over which refusals add up, counted from the first one.
        lockout: seconds a locked-out address is refused with 429.
        max_addresses: addresses remembered at most (the least recently failing go first).
        clock: monotonic seconds (tests pass their own).

    The window starts with an address's first refusal, so it can make fewer
    than ``limit`` wrong guesses per ``window`` without being locked out. A
    success does not reset its count, so a valid account cannot be used to
    keep guessing another one.

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
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(limit, int) or limit < 1:
            raise ConfigurationError("AuthThrottle: limit must be an integer >= 1")
        if window <= 0 or lockout <= 0:
            raise ConfigurationError("AuthThrottle: window and lockout must be > 0 seconds")
        if max_addresses < 1:
            raise ConfigurationError("AuthThrottle: max_addresses must be >= 1")
        self.limit = limit
        self.window = float(window)
        self.lockout = float(lockout)
        self.max_addresses = max_addresses
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or ``None`` when it is not locked out."""
        record = self._records.get(address)
        if record is None:
            return None
        now = self._clock()
        if record.locked_until > now:
            return record.locked_until - now
        if now - record.started >= self.window:
            del self._records[address]  # nothing left to remember
        return None

    def failed(self, address: str) -> bool:
        """Count one refused authentication; ``True`` when it locks ``address`` out."""
        now = self._clock()
        record = self._records.get(address)
        if record is None or (record.locked_until <= now and now - record.started >= self.window):
            record = self._records[address] = _Record(now)
        self._records.move_to_end(address)
        record.count += 1
        locked = record.count >= self.limit
        if locked:
            record.locked_until = now + self.lockout
            record.started = now
            record.count = 0
        while len(self._records) > self.max_addresses:
            self._records.popitem(last=False)
        return locked

    def __len__(self) -> int:
        """Addresses remembered now."""
        return len(self._records)

    def __repr__(self) -> str:
        return (
            f"AuthThrottle(limit={self.limit}, window={self.window:g}, "
            f"lockout={self.lockout:g}, addresses={len(self)})"
        )
