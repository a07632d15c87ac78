"""AuthThrottle without I/O: counting, lockout, expiry and bounded memory, on a fake clock."""

from __future__ import annotations

import pytest

from livepanel import ConfigurationError
from livepanel.throttle import AuthThrottle, RefusalLog, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def throttle(clock: Clock, **kwargs: object) -> AuthThrottle:
    options: dict[str, object] = {"limit": 3, "window": 60.0, "lockout": 30.0, **kwargs}
    return AuthThrottle(clock=clock, **options)  # type: ignore[arg-type]


def test_failures_below_the_limit_lock_nothing_out(clock: Clock) -> None:
    """limit - 1 failures within the window leave the address free to try."""
    t = throttle(clock)
    assert [t.failed("192.0.2.1") for _ in range(2)] == [False, False]
    assert t.retry_after("192.0.2.1") is None


def test_the_failure_that_reaches_the_limit_locks_the_address_out(clock: Clock) -> None:
    """The limit-th failure within the window starts a lockout of `lockout` seconds."""
    t = throttle(clock)
    assert [t.failed("192.0.2.1") for _ in range(3)] == [False, False, True]
    assert t.retry_after("192.0.2.1") == 30.0
    clock.now += 10
    assert t.retry_after("192.0.2.1") == 20.0


def test_a_lockout_ends_after_lockout_seconds(clock: Clock) -> None:
    """Once the lockout is over the address may try again, with a fresh count."""
    t = throttle(clock)
    for _ in range(3):
        t.failed("192.0.2.1")
    clock.now += 30
    assert t.retry_after("192.0.2.1") is None
    assert [t.failed("192.0.2.1") for _ in range(3)] == [False, False, True]


def test_failures_spread_beyond_the_window_do_not_add_up(clock: Clock) -> None:
    """The count starts again when the window that began with the first failure is over."""
    t = throttle(clock)
    t.failed("192.0.2.1")
    t.failed("192.0.2.1")
    clock.now += 60
    assert [t.failed("192.0.2.1") for _ in range(2)] == [False, False]
    assert t.retry_after("192.0.2.1") is None


def test_addresses_are_counted_apart(clock: Clock) -> None:
    """One address's failures never lock out another."""
    t = throttle(clock)
    for _ in range(3):
        t.failed("192.0.2.1")
    assert t.retry_after("192.0.2.1") is not None
    assert t.retry_after("192.0.2.2") is None
    assert t.failed("192.0.2.2") is False


def test_memory_is_bounded_by_max_addresses(clock: Clock) -> None:
    """Beyond max_addresses the address that failed least recently is forgotten first."""
    t = throttle(clock, max_addresses=100)
    for n in range(1000):
        t.failed(f"198.51.{n // 256}.{n % 256}")
        assert len(t) <= 100
    assert len(t) == 100
    t.failed("198.51.3.230")  # the newest ones are kept, and counted on
    t.failed("198.51.3.230")
    assert t.retry_after("198.51.3.230") is not None  # its third failure


def test_an_address_whose_window_is_over_is_forgotten_when_looked_up(clock: Clock) -> None:
    """Memory is given back as windows end, not only when the cap is reached."""
    t = throttle(clock)
    t.failed("192.0.2.1")
    clock.now += 61
    assert t.retry_after("192.0.2.1") is None
    assert len(t) == 0


def test_invalid_settings_are_configuration_errors() -> None:
    """A limit below 1 or a non-positive window, lockout or cap is refused at construction."""
    for kwargs in ({"limit": 0}, {"window": 0}, {"lockout": -1}, {"max_addresses": 0}):
        with pytest.raises(ConfigurationError):
            AuthThrottle(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("client", "key"),
    [
        (("192.0.2.7", 50000), "192.0.2.7"),
        (("2001:db8:1:2:3:4:5:6", 443), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::1", 443), "2001:db8:1:2::/64"),
        (("::ffff:192.0.2.7", 1), "192.0.2.7"),
        (("fe80::1%eth0", 1), "fe80::/64"),
        (("not-an-ip", 0), "not-an-ip"),
        (("x" * 500, 0), "x" * 64),
        (None, "unknown"),
        (("", 0), "unknown"),
    ],
)
def test_client_address_keys(client: object, key: str) -> None:
    """IPv4 by address, IPv6 by /64 (one host's block), anything else by bounded text."""
    assert client_address(client) == key


def test_repr_shows_settings_and_size(clock: Clock) -> None:
    t = throttle(clock)
    t.failed("192.0.2.1")
    assert repr(t) == "AuthThrottle(limit=3, window=60, lockout=30, addresses=1)"


def test_guesses_in_flight_count_toward_the_limit(clock: Clock) -> None:
    """attempt() reserves a guess: limit guesses in flight and the next one must wait."""
    t = throttle(clock)
    assert [t.attempt("192.0.2.1") for _ in range(3)] == [None, None, None]
    assert t.attempt("192.0.2.1") == 1.0
    assert t.finished("192.0.2.1", refused=False) is False  # one succeeded: room for one more
    assert t.attempt("192.0.2.1") is None
    assert [t.finished("192.0.2.1", refused=True) for _ in range(3)] == [False, False, True]
    assert t.retry_after("192.0.2.1") == 30.0


def test_a_user_name_out_of_budget_refuses_only_addresses_that_failed(clock: Clock) -> None:
    """Past user_limit failures for one name, addresses that failed may not try it again;
    a fresh address (the real user) may, and other names are not affected."""
    t = throttle(clock, limit=10, user_limit=3)
    for n in range(3):
        t.failed(f"192.0.2.{n}", "admin")
    assert t.retry_after("192.0.2.0", "admin") == 30.0
    assert t.retry_after("192.0.2.0", "bob") is None
    assert t.retry_after("192.0.2.99", "admin") is None
    assert t.attempt("192.0.2.1", "admin") == 30.0
    clock.now += 30
    assert t.retry_after("192.0.2.0", "admin") is None


def test_eviction_forgets_unlocked_addresses_before_locked_ones(clock: Clock) -> None:
    """At max_addresses a new address pushes out the oldest unlocked record, never a lockout
    while an unlocked record remains."""
    t = throttle(clock, max_addresses=3)
    for _ in range(3):
        t.failed("192.0.2.1")
    t.failed("192.0.2.2")
    t.failed("192.0.2.3")
    t.failed("192.0.2.4")
    assert t.retry_after("192.0.2.1") == 30.0
    assert len(t) == 3


def test_refusal_log_writes_one_line_per_address_and_interval(clock: Clock) -> None:
    """The first refusal is logged; later ones within the interval are counted into the next
    line; addresses are apart."""
    log = RefusalLog(interval=60, clock=clock)
    assert [log.note("192.0.2.1") for _ in range(4)] == [0, None, None, None]
    assert log.note("192.0.2.2") == 0
    clock.now += 60
    assert log.note("192.0.2.1") == 3
