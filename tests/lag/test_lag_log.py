"""The lag arithmetic of one connection: what was written against what was acknowledged."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from livepanel.lag import RING, LagReading, SentLog, summarize
from livepanel.receipts import ReceiptBook

E = "e1"


def at(n: int, epoch: str = E) -> tuple[str, tuple[int, ...]]:
    return (epoch, (n,))


def test_a_connection_that_never_acked_has_no_reading() -> None:
    """Writes alone make no reading: an SSE stream or a client that never acks is not behind."""
    log = SentLog()
    for n in range(1, 200):
        log.wrote(1, at(n), float(n))
    assert log.lag(1000.0) is None


def test_events_and_seconds_since_the_first_write_after_the_ack() -> None:
    """Behind by the events written after the acked one, since the first of them was written."""
    log = SentLog()
    log.wrote(2, at(2), 10.0)
    log.wrote(3, at(5), 11.0)
    log.wrote(1, at(6), 12.5)
    log.acked(at(2))
    assert log.lag(20.0) == (4, 9.0)
    log.acked(at(5))
    assert log.lag(20.0) == (1, 7.5)
    log.acked(at(6))
    assert log.lag(20.0) == (0, 0.0)


def test_an_ack_inside_a_write_counts_the_rest_of_that_write_as_behind() -> None:
    """An upper bound: the write's events are not known one by one."""
    log = SentLog()
    log.wrote(5, at(5), 1.0)
    log.acked(at(3))
    assert log.lag(2.0) == (5, 1.0)


def test_an_ack_that_overtook_the_end_of_its_write_counts() -> None:
    """The client acked before the writer's send returned: that write is acknowledged."""
    log = SentLog()
    log.wrote(1, at(1), 1.0)
    log.acked(at(3))
    log.wrote(2, at(3), 2.0)
    assert log.lag(100.0) == (0, 0.0)


def test_a_client_far_behind_keeps_its_oldest_unacked_write() -> None:
    """Beyond RING writes the newest merge; the reading stays an upper bound, never lower."""
    log = SentLog()
    log.wrote(1, at(1), 0.0)
    log.acked(at(1))
    for n in range(2, 2 + 5 * RING):
        log.wrote(1, at(n), float(n))
    assert log.lag(1000.0) == (5 * RING, 998.0)
    log.acked(at(10))
    events, seconds = log.lag(1000.0)  # type: ignore[misc]
    assert events == 5 * RING - 9
    assert seconds == 1000.0 - 11
    log.acked(at(1 + 5 * RING))
    assert log.lag(1000.0) == (0, 0.0)


def test_a_new_epoch_is_behind_an_ack_of_the_old_one() -> None:
    """Positions of another epoch are never covered by an ack: they count as behind."""
    log = SentLog()
    log.wrote(1, at(7), 1.0)
    log.acked(at(7))
    log.wrote(1, at(1, "e2"), 2.0)
    assert log.lag(3.0) == (1, 1.0)
    log.acked(at(1, "e2"))
    assert log.lag(3.0) == (0, 0.0)


def test_the_summary_orders_by_lag_and_says_when_every_acking_one_is_stuck() -> None:
    """stuck() needs acking connections and every one of them behind beyond the limit."""
    fresh = LagReading("a", "websocket", 0, 0.0)
    frozen = LagReading("b", "websocket", 9, 45.0)
    both = summarize([fresh, frozen], connections=3)
    assert both.readings[0] is frozen
    assert both.acking == 2
    assert both.lagging == 1
    assert not both.stuck(30.0)
    assert both.behind_for(30.0) == 1
    assert summarize([frozen], connections=3).stuck(30.0)
    assert not summarize([], connections=3).stuck(30.0)
    stats = both.stats()
    assert stats["not_acking"] == 1
    assert stats["max_seconds"] == 45.0
    assert stats["max_events"] == 9


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.integers(0, 4), st.integers(0, 3)),
            st.tuples(st.just("ack"), st.integers(-3, 12), st.sampled_from([E, "other"])),
        ),
        max_size=120,
    )
)
def test_readings_are_never_negative_nor_below_the_truth(
    steps: list[tuple[str, int, object]],
) -> None:
    """Against a model that remembers every event: events and seconds are bounded below by the
    truth and above by everything written, whatever acks (old, repeated, of another epoch)."""
    log = SentLog()
    events: list[tuple[int, float]] = []  # (position, written at), in the order written
    position, clock, acked = 0, 0.0, None
    for kind, a, b in steps:
        clock += 1.0
        if kind == "write":
            batch = [(position + i + 1, clock) for i in range(a)]
            position += a
            events.extend(batch)
            log.wrote(a, at(position) if a else None, clock)
            position += int(b)  # events the connection's filter skipped
        else:
            target = max(0, position + int(a) - 6)
            if b == E:  # the mark passes on its own epoch's acks only (AckMark.record)
                acked = target if acked is None else max(acked, target)
                log.acked(at(target))
    reading = log.lag(clock + 1.0)
    if acked is None:
        assert reading is None
        return
    assert reading is not None
    lag_events, lag_seconds = reading
    behind = [(p, t) for p, t in events if p > acked]
    assert len(behind) <= lag_events <= len(events)
    assert lag_seconds >= 0.0
    if behind:
        assert lag_seconds >= clock + 1.0 - behind[0][1]


async def _no_backend(call: object) -> object:
    raise AssertionError("no backend in this test")


def test_acks_from_the_future_another_epoch_or_garbage_make_no_bogus_lag() -> None:
    """A lying client: garbage and other epochs are ignored, a future id is the newest event."""
    head = "e1:5"
    book = ReceiptBook(None, _no_backend, lambda: head)  # type: ignore[arg-type]
    mark = book.open("mallory")
    mark.sent.wrote(5, at(5), 1.0)
    for lie in ("garbage", "", "e2:3", "e1:-4", "e1:99999999999", "x" * 5000):
        mark.record(lie)
    assert mark.id == "e1:5"  # the future id, taken as the newest event: nothing is behind
    assert mark.sent.lag(2.0) == (0, 0.0)
    mark.sent.wrote(2, at(7), 3.0)
    mark.record("e1:1")  # older than its mark: changes nothing
    assert mark.sent.lag(4.0) == (2, 1.0)
    summary = book.lag(4.0)
    assert summary.acking == 1
    assert summary.readings[0].events == 2


def test_top_shows_the_dashboards_line_the_reason_and_the_lag_percentiles() -> None:
    """A not-ok report and a lag histogram: top names the verdict, the counts and the reason."""
    from livepanel.top import Reading, parse_metrics, render

    report = {
        "ok": False,
        "backend": "ok",
        "readerLagSeconds": 0.0,
        "connections": 3,
        "draining": False,
        "dashboards": "not_acking",
        "ackLag": {"acking": 2, "behind": 2, "maxSeconds": 7.5, "limitSeconds": 3.0},
        "reason": "every dashboard that acks (2) is behind by over 3 s while events flow",
    }
    page = "\n".join(
        [
            'livepanel_connection_lag_seconds_bucket{le="1.0"} 0.0',
            'livepanel_connection_lag_seconds_bucket{le="10.0"} 2.0',
            'livepanel_connection_lag_seconds_bucket{le="+Inf"} 2.0',
        ]
    )
    lines = render(Reading(at=0.0, health=report, samples=parse_metrics(page)), None)
    assert "dashboards  not_acking  acking 2  behind 2 (over 3.000 s)  max lag 7.500 s" in lines
    assert f"reason      {report['reason']}" in lines
    assert "ack lag     p50 <= 10.000 s  p99 <= 10.000 s  acking 2" in lines
    assert all(len(line) <= 100 for line in lines)
