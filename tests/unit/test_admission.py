"""The admission limiter, without I/O: a steady rate of accepts, and hints that spread a herd."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livepanel.admission import AdmissionLimiter, claim_grace, client_jitter, default_burst
from livepanel.errors import ConfigurationError

arrivals = st.lists(
    st.tuples(st.integers(0, 30), st.floats(0.0, 0.2, allow_nan=False)), max_size=300
)


def most_in_a_window(times: list[float], width: float) -> int:
    """The most of ``times`` (sorted) inside any window ``width`` seconds wide."""
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] < t - width + 1e-9:
            start += 1
        most = max(most, end - start + 1)
    return most


@settings(max_examples=200, deadline=None)
@given(arrivals, st.sampled_from([5.0, 20.0, 100.0]), st.integers(1, 5))
def test_no_window_holds_more_accepts_than_the_rate_allows(
    steps: list[tuple[int, float]], rate: float, burst: int
) -> None:
    """Whoever arrives whenever, accepts in any window of w seconds number at most
    rate * w + burst, plus a tenth of the rate for clients at their promised time."""
    limiter = AdmissionLimiter(rate, burst, rng=random.Random(0))
    now, accepted = 0.0, []
    for key, gap in steps:
        now += gap
        if limiter.admit(key, now) is None:
            accepted.append(now)
    for width in (1.0 / rate, 0.5, 1.0, 3.0):
        allowed = math.floor(rate * width + 1e-6) + burst + math.floor(rate / 10)
        assert most_in_a_window(accepted, width) <= allowed


@settings(max_examples=200, deadline=None)
@given(arrivals, st.floats(0.5, 30.0))
def test_every_hint_is_between_one_slot_and_max_wait(
    steps: list[tuple[int, float]], max_wait: float
) -> None:
    """A hint is never shorter than 10 ms nor longer than max_wait, and the promises kept
    never exceed rate * max_wait, however the clients behave."""
    limiter = AdmissionLimiter(10.0, 2, max_wait=max_wait, rng=random.Random(1))
    now = 0.0
    for key, gap in steps:
        now += gap
        wait = limiter.admit(key, now)
        if wait is not None:
            assert 0.01 <= wait <= max_wait
        assert limiter.promised <= math.ceil(10.0 * max_wait)


def honouring(
    limiter: AdmissionLimiter, first: dict[int, float], rng: random.Random, limit: float = 600.0
) -> tuple[dict[int, float], list[float], int]:
    """Clients that come back when told, plus the contract's jitter, until each is in:
    when each got in, every accept's time, and how many refusals it took."""
    due = dict(first)
    admitted: dict[int, float] = {}
    accepts: list[float] = []
    refusals = 0
    while due:
        key, now = min(due.items(), key=lambda item: item[1])
        assert now < limit, "the herd never got in"
        wait = limiter.admit(key, now)
        if wait is None:
            admitted[key] = now
            accepts.append(now)
            del due[key]
        else:
            refusals += 1
            told = max(1, math.ceil(wait))  # Retry-After: whole seconds
            due[key] = now + told + rng.uniform(0.0, client_jitter(told))
    return admitted, accepts, refusals


@pytest.mark.parametrize("herd", [10, 250, 1000])
def test_a_herd_that_honours_its_hints_comes_back_at_the_rate_mostly_at_the_first_return(
    herd: int,
) -> None:
    """A herd of N arriving within 50 ms is told return times over about N / rate seconds;
    coming back when told (whole seconds, plus jitter), nearly all are admitted at their
    first return, and no second holds more than 1.2 x rate accepts (burst and priority)."""
    rate, rng = 100.0, random.Random(herd)
    limiter = AdmissionLimiter(rate, 10, rng=rng)
    arrivals = {key: rng.uniform(0.0, 0.05) for key in range(herd)}
    admitted, accepts, refusals = honouring(limiter, arrivals, rng)
    assert len(admitted) == herd
    assert max(admitted.values()) <= herd / rate * 1.6 + 3.0
    assert refusals <= (herd - 10) * 1.3
    assert most_in_a_window(sorted(accepts), 1.0) <= rate * 1.2


def test_a_client_told_to_wait_takes_no_token_before_its_time() -> None:
    """A key with a promise pending is told the time left, even when a token is free (a
    newcomer takes it); at its time the promise is its own, kept through a busy moment."""
    limiter = AdmissionLimiter(2.0, 1)
    assert limiter.admit("first", 0.0) is None
    assert limiter.admit("queued", 0.0) == 1
    early = limiter.admit("queued", 0.6)  # the bucket has a token again: not for it
    assert early is not None
    assert 0.4 - 1e-9 <= early <= 0.4 + 0.5  # the time left, spread by one slot at most
    assert limiter.admit("newcomer", 0.6) is None
    moment = limiter.admit("queued", 1.0)  # its time, but the newcomer emptied the bucket
    assert moment == pytest.approx(0.1)
    assert limiter.promised == 1  # its place is still its own
    assert limiter.admit("queued", 2.0) is None
    assert limiter.promised == 0


def test_a_client_that_hammers_gets_nearly_nothing_and_others_get_in_at_the_rate() -> None:
    """A key that ignores its hints and arrives every millisecond holds one promise at a time:
    honest clients arriving at half the rate are each admitted within a couple of seconds,
    and the hammerer is refused all but about once a second."""
    rate, rng = 20.0, random.Random(2)
    limiter = AdmissionLimiter(rate, 1, per_key=1, rng=rng)
    hammer_admitted = 0
    waited: list[float] = []
    pending: dict[int, float] = {}  # honest client -> when it comes back
    arrived: dict[int, float] = {}
    next_honest = 0
    for tick in range(10_000):  # ten seconds in milliseconds
        now = tick / 1000
        if limiter.admit("hammer", now) is None:
            hammer_admitted += 1
        if tick % 100 == 0:  # an honest client every 0.1 s: half the rate
            pending[next_honest], arrived[next_honest] = now, now
            next_honest += 1
        for key, due in list(pending.items()):
            if due <= now:
                wait = limiter.admit(key, now)
                if wait is None:
                    waited.append(now - arrived[key])
                    del pending[key]
                else:
                    told = max(1, math.ceil(wait))
                    pending[key] = now + told + rng.uniform(0.0, client_jitter(told))
    assert len(waited) >= next_honest - 20  # only the last seconds' are still out
    assert statistics.mean(waited) <= 1.5
    assert max(waited) <= 6.0
    assert hammer_admitted <= 10 + 1  # about once a second
    assert limiter.refused > 9_000  # it keeps being told to wait


def test_a_hammering_key_cannot_push_everyone_elses_hints_out() -> None:
    """However often a key is refused, the promises it holds stay at per_key: a newcomer's
    hint is that of a short queue."""
    limiter = AdmissionLimiter(10.0, 1, per_key=2, rng=random.Random(3))
    limiter.admit("somebody", 0.0)
    for n in range(5000):
        limiter.admit("hammer", n / 100_000)
    assert limiter.promised == 2
    assert limiter.admit("newcomer", 0.05) == 1


def test_many_dashboards_behind_one_key_are_spread_not_told_the_same_time() -> None:
    """Beyond per_key, a key's handshakes get hints spread at random past its promises, so a
    herd behind one address and user does not come back at once."""
    limiter = AdmissionLimiter(100.0, 10, rng=random.Random(4))
    hints = [limiter.admit(("admin", "10.0.0.1"), 0.0) for _ in range(500)]
    waits = sorted(w for w in hints if w is not None)
    assert len(waits) == 490
    assert waits[-1] - waits[0] > 2.0  # spread over seconds, not one instant
    assert len({math.ceil(w) for w in waits}) >= 4


def test_a_promise_nobody_claims_lapses_and_frees_the_queue() -> None:
    """A client told to come back that never does loses its place after claim_grace: the
    queue does not wait for it forever."""
    limiter = AdmissionLimiter(10.0, 1)
    limiter.admit("first", 0.0)
    wait = limiter.admit("gone", 0.0)
    assert wait == 1
    assert limiter.promised == 1
    later = wait + claim_grace(wait) + 0.01
    assert limiter.admit("newcomer", later) is None
    assert limiter.promised == 0


def test_a_probe_says_what_a_handshake_would_hear_and_changes_nothing() -> None:
    """peek() answers like admit() (a wait, or None) without taking a token or a place."""
    limiter = AdmissionLimiter(10.0, 1)
    assert limiter.peek("a", 0.0) is None
    assert limiter.peek("a", 0.0) is None  # still free: the probe took nothing
    assert limiter.admit("a", 0.0) is None
    assert limiter.peek("b", 0.0) == pytest.approx(1.0)
    assert limiter.promised == 0  # a probe is promised nothing
    assert limiter.admit("b", 0.0) == 1
    assert limiter.peek("b", 0.5) == pytest.approx(0.5)
    assert limiter.peek("b", 1.0) is None
    assert limiter.admit("b", 1.0) is None


def test_a_promised_client_that_comes_back_in_a_bunch_keeps_its_place() -> None:
    """Two clients told the same second who come back at the same instant: one is admitted,
    the other told a moment more, and its place is still its own."""
    limiter = AdmissionLimiter(5.0, 1)
    limiter.admit("first", 0.0)
    assert limiter.admit("a", 0.0) == 1
    assert limiter.admit("b", 0.0) == 1
    assert limiter.admit("a", 1.0) is None
    moment = limiter.admit("b", 1.0)
    assert moment == pytest.approx(0.2)
    assert limiter.promised == 1
    assert limiter.admit("b", 2.0) is None
    assert limiter.promised == 0


def test_the_default_burst_is_a_tenth_of_a_second() -> None:
    """default_burst(rate): a tenth of the rate, at least one."""
    assert (default_burst(100.0), default_burst(5.0), default_burst(1000.0)) == (10, 1, 100)


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 0.0}, {"rate": -1.0}, {"rate": 1.0, "burst": 0}, {"rate": 1.0, "max_wait": 0}],
)
def test_settings_out_of_range_are_refused_with_a_reason(kwargs: dict[str, float]) -> None:
    """A rate or max_wait that is not positive, or a burst below 1, is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="AdmissionLimiter"):
        AdmissionLimiter(**kwargs)  # type: ignore[arg-type]


def test_a_handshake_the_next_token_is_near_is_held_for_it_not_refused() -> None:
    """With hold, a handshake whose token is at most that far off is admitted with a delay
    (accepted then, on the bucket's time); beyond it, refused with a hint."""
    limiter = AdmissionLimiter(10.0, 1, hold=0.5)
    delays = []
    for key in range(6):
        assert limiter.admit(key, 0.0) is None
        delays.append(limiter.delay)
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert limiter.admit("late", 0.0) == 1


@settings(max_examples=100, deadline=None)
@given(arrivals, st.floats(0.0, 0.9))
def test_held_handshakes_are_accepted_on_the_buckets_time(
    steps: list[tuple[int, float]], hold: float
) -> None:
    """Accepted at now + delay, held handshakes keep every window within the rate."""
    rate, burst = 20.0, 2
    limiter = AdmissionLimiter(rate, burst, hold=hold, rng=random.Random(5))
    now, accepted = 0.0, []
    for key, gap in steps:
        now += gap
        if limiter.admit(key, now) is None:
            assert 0.0 <= limiter.delay <= hold + 1e-9
            accepted.append(now + limiter.delay)
    accepted.sort()
    assert most_in_a_window(accepted, 1.0) <= rate + burst + math.floor(rate / 10)
