"""The outbox without an event loop: bounds, slow-consumer policies, the replay hand-over's
states, and a state machine that checks its counters and "never repeated" after every step."""

from __future__ import annotations

import sys

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from livepanel.events import Event
from livepanel.outbox import (
    MAX_CONTROL_FRAMES,
    SENT_MEMORY,
    DeliveryCounters,
    Frame,
    Handover,
    Outbox,
    SlowConsumerPolicy,
)


def live(n: int, epoch: str = "e") -> Frame:
    event = Event("agent.status", {"n": n}, id=f"{epoch}:{n}")
    return Frame(event, event.to_json())


def event(n: int) -> Event:
    return Event("agent.status", {"n": n}, id=f"e:{n}")


def box(
    queue_size: int = 3, policy: SlowConsumerPolicy = "disconnect", max_bytes: int = 2**20
) -> tuple[Outbox, DeliveryCounters, list[str]]:
    counters = DeliveryCounters()
    overflows: list[str] = []
    outbox = Outbox(
        counters,
        queue_size=queue_size,
        policy=policy,
        max_bytes=max_bytes,
        on_overflow=lambda: overflows.append("slow"),
    )
    return outbox, counters, overflows


def numbers(frames: list[Frame]) -> list[int]:
    return [f.event.payload["n"] for f in frames if f.event is not None]


def keep_all(_: Event) -> bool:
    return True


def test_the_outbox_module_imports_no_asyncio() -> None:
    """The outbox is sans-I/O: importing it alone loads no event loop machinery of its own."""
    source = sys.modules["livepanel.outbox"].__file__
    assert source is not None
    with open(source, encoding="utf-8") as f:
        text = f.read()
    assert "import asyncio" not in text
    assert "from asyncio" not in text


def test_a_parked_writer_is_told_once_per_park() -> None:
    """The first live event after the writer parked asks for a wake; later ones do not."""
    outbox, _, _ = box(queue_size=10)
    assert outbox.push(live(1)) is False  # the writer is running: it will find it
    outbox.park()
    assert outbox.push(live(2)) is True
    assert outbox.push(live(3)) is False
    outbox.park()
    assert outbox.push(live(4)) is True


def test_disconnect_overflows_once_and_closes() -> None:
    """Past queue_size under "disconnect": on_overflow once, counted, CLOSED, nothing more."""
    outbox, counters, overflows = box(queue_size=2)
    for n in range(5):
        outbox.push(live(n))
    assert overflows == ["slow"]
    assert counters.slow_disconnects == 1
    assert outbox.handover is Handover.CLOSED
    assert numbers(outbox.take()) == [0, 1]
    assert outbox.push_control("{}") is False


def test_drop_loses_the_oldest_live_event_never_a_control_frame() -> None:
    """ "drop": the oldest live event goes, the control frame stays first."""
    outbox, counters, overflows = box(queue_size=2, policy="drop")
    assert outbox.push_control('{"type":"welcome"}')
    for n in range(4):
        outbox.push(live(n))
    frames = outbox.take()
    assert frames[0].event is None
    assert numbers(frames) == [2, 3]
    assert (counters.dropped, overflows) == (2, [])


def test_the_byte_bound_overflows_whatever_the_policy() -> None:
    """Past max_bytes even "drop" closes: dropping events cannot shrink control frames."""
    outbox, _, overflows = box(queue_size=1000, policy="drop", max_bytes=1024)
    for _ in range(100):
        outbox.push_control("x" * 100)
    assert overflows == ["slow"]
    assert outbox.closed
    assert outbox.queued_bytes <= 1024 + 100


def test_control_frames_are_bounded_by_count() -> None:
    """A client that never reads pongs is cut off at MAX_CONTROL_FRAMES."""
    outbox, _, overflows = box()
    accepted = sum(outbox.push_control("{}") for _ in range(MAX_CONTROL_FRAMES + 10))
    assert accepted == MAX_CONTROL_FRAMES
    assert overflows == ["slow"]


def test_holding_keeps_live_events_aside_until_release() -> None:
    """HOLDING: live events wait aside; a release without a replay puts them back, LIVE."""
    outbox, _, _ = box(queue_size=10)
    outbox.push(live(1))
    outbox.hold()
    assert outbox.handover is Handover.HOLDING
    outbox.push(live(2))
    assert len(outbox) == 0
    assert outbox.release("e:0", None, keep=keep_all) is False
    assert outbox.handover is Handover.LIVE
    assert numbers(outbox.take()) == [1, 2]


def test_a_replay_covers_held_and_late_live_events_then_goes_live() -> None:
    """SKIPPING: held and later live events the replay covered are dropped; past it, LIVE."""
    outbox, counters, _ = box(queue_size=10)
    outbox.hold()
    outbox.push(live(2))
    assert outbox.release("e:0", [event(1), event(2), event(3)], keep=keep_all) is True
    assert outbox.handover is Handover.SKIPPING
    outbox.push(live(3))  # a live feed trailing storage: covered, dropped
    assert outbox.handover is Handover.SKIPPING
    outbox.push(live(4))
    assert outbox.handover is Handover.LIVE
    assert numbers(outbox.take()) == [1, 2, 3, 4]
    assert counters.replayed == 3


def test_a_replay_never_repeats_an_event_already_handed_to_the_writer() -> None:
    """Events popped before a subscribe with since are not sent again by its replay."""
    outbox, _, _ = box(queue_size=10)
    outbox.push(live(1))
    outbox.push(live(2))
    assert numbers([outbox.pop()]) == [1]
    outbox.hold()
    outbox.release("e:0", [event(1), event(2)], keep=keep_all)
    assert numbers(outbox.take()) == [2]


def test_the_memory_of_sent_frames_keeps_the_newest_and_no_more() -> None:
    """Sent frames stay in the outbox's list (a replay skips their events) up to SENT_MEMORY
    and a little slack; older ones are forgotten: a replay repeats only those."""
    outbox, _, _ = box(queue_size=10)
    for n in range(1, 5001):
        assert not outbox.push(live(n))
        assert numbers([outbox.pop()]) == [n]
        if n % 7 == 0:  # writers that batch take everything at once
            assert outbox.push_control('{"type":"pong"}')
            assert [f.text for f in outbox.take()] == ['{"type":"pong"}']
    assert len(outbox) == 0
    assert SENT_MEMORY <= len(outbox.queue) <= SENT_MEMORY + 256
    assert outbox.newest_sent() == ("e", (5000,))
    outbox.hold()
    assert outbox.release("e:3000", [event(n) for n in range(3001, 5001)], keep=keep_all)
    replayed = numbers(outbox.take())
    assert replayed  # the oldest were forgotten: sent again, in order, the rest never
    assert replayed == list(range(3001, 3001 + len(replayed)))
    assert 5000 - replayed[-1] >= SENT_MEMORY * 6 // 7


def test_another_epoch_ends_skipping() -> None:
    """A live event of another epoch is never covered by the replay of the old one."""
    outbox, _, _ = box(queue_size=10)
    outbox.hold()
    outbox.release("e:0", [event(1)], keep=keep_all)
    outbox.push(live(1, epoch="f"))
    assert outbox.handover is Handover.LIVE
    assert numbers(outbox.take()) == [1, 1]


def test_release_outside_holding_is_refused() -> None:
    """A release without a hold changes nothing: the transitions live in one place."""
    outbox, _, _ = box()
    assert outbox.release("e:0", [event(1)], keep=keep_all) is False
    assert outbox.handover is Handover.LIVE
    assert len(outbox) == 0


def test_a_closed_outbox_ignores_everything() -> None:
    """CLOSED is final: hold, push and control frames are ignored."""
    outbox, _, _ = box()
    assert outbox.close() is True
    assert outbox.close() is False
    outbox.hold()
    assert outbox.push(live(1)) is False
    assert outbox.push_control("{}") is False
    assert outbox.handover is Handover.CLOSED
    assert len(outbox) == 0


class OutboxMachine(RuleBasedStateMachine):
    """A hostile mix of publishes, pongs, reads, resubscribes and closes against one outbox:
    after every step the counters match the queue and no event was handed out twice."""

    def __init__(self) -> None:
        super().__init__()
        self.counters = DeliveryCounters()
        self.outbox = Outbox(self.counters, queue_size=4, policy="drop", max_bytes=10_000)
        self.published = 0  # the stream: events 1..published
        self.delivered: list[int] = []

    @rule()
    def publish(self) -> None:
        self.published += 1
        self.outbox.push(live(self.published))

    @rule()
    def pong(self) -> None:
        self.outbox.push_control('{"type":"pong"}')

    @precondition(lambda self: len(self.outbox) > 0)
    @rule()
    def read_one(self) -> None:
        self.delivered += numbers([self.outbox.pop()])

    @rule()
    def read_all(self) -> None:
        self.delivered += numbers(self.outbox.take())

    @rule(back=st.integers(min_value=0, max_value=6), retained=st.booleans())
    def resubscribe(self, back: int, retained: bool) -> None:
        since = max(0, (self.delivered[-1] if self.delivered else 0) - back)
        self.outbox.hold()
        self.publish()  # arrives while the replay is fetched
        replay = [event(n) for n in range(since + 1, self.published + 1)] if retained else None
        self.outbox.release(f"e:{since}", replay, keep=keep_all)

    @rule()
    def close(self) -> None:
        self.outbox.close()

    @invariant()
    def counters_match_the_queue(self) -> None:
        frames = list(self.outbox)
        assert self.outbox.live_count == sum(1 for f in frames if f.live)
        assert self.outbox.controls == sum(1 for f in frames if f.event is None)
        assert self.outbox.queued_bytes == sum(f.size for f in frames if f.live or not f.event)
        assert self.outbox.live_count <= 4

    @invariant()
    def never_repeated(self) -> None:
        assert len(self.delivered) == len(set(self.delivered)), self.delivered

    @invariant()
    def handover_is_consistent(self) -> None:
        if self.outbox.closed:
            assert self.outbox.push(live(10_000)) is False


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("policy", ["disconnect", "drop"])
def test_counters_return_to_zero_when_everything_is_read(policy: SlowConsumerPolicy) -> None:
    """After a take, every bound's counter is zero again."""
    outbox, _, _ = box(queue_size=5, policy=policy)
    outbox.push_control("{}")
    for n in range(3):
        outbox.push(live(n))
    outbox.take()
    assert (outbox.live_count, outbox.controls, outbox.queued_bytes) == (0, 0, 0)


def test_an_unavailable_replay_keeps_what_was_queued_whatever_the_new_filter() -> None:
    """A since that is not retained: the held events come back as they were, as a plain
    filter change keeps what is queued (found by the broadcast model: the new filter used to
    drop some of them, behind resume_unavailable)."""
    outbox, _, _ = box(queue_size=10)
    outbox.push(live(1))
    outbox.hold()
    outbox.push(live(2))
    assert outbox.release("e:0", None, keep=lambda _: False) is False
    assert numbers(outbox.take()) == [1, 2]
