"""The Broadcaster with its memory backend, driven directly with asyncio (no sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from livepanel import (
    Broadcaster,
    ConfigurationError,
    Event,
    MemoryBackend,
    SlowConsumer,
    Subscription,
)
from livepanel.events import AgentStatus, SessionKilled
from livepanel.protocol import make_id, parse_id

T = TypeVar("T")

STATS_KEYS = {
    "connections",
    "published",
    "delivered",
    "dropped",
    "slow_disconnects",
    "replayed",
    "publish_failures",
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a test coroutine in a fresh event loop, failing instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def killed(n: int) -> SessionKilled:
    """The n-th test event's payload."""
    return SessionKilled(session_key=f"s{n}", agent_id="a1")


def keys(events: list[Event]) -> list[str]:
    """The session keys of session.killed events, to compare sequences at a glance."""
    return [e.payload["sessionKey"] for e in events]


async def take(events: Subscription, n: int) -> list[Event]:
    """The next n events of a subscription."""
    return [await anext(events) for _ in range(n)]


def seq(event: Event) -> int:
    """The memory backend's position of an event."""
    assert event.id is not None
    return parse_id(event.id)[1][0]


# --------------------------------------------------------------------------- publishing


def test_publish_returns_the_accepted_event_with_its_id() -> None:
    """publish returns the validated wire-form Event, with an id from the memory backend."""
    event = Broadcaster().publish(killed(1))
    assert event.type == "session.killed"
    assert event.payload == {"sessionKey": "s1", "agentId": "a1"}
    assert event.id is not None
    parse_id(event.id)


def test_publish_takes_a_type_and_a_mapping_payload() -> None:
    """publish("type", {camelCase payload}) is the same as publishing the payload object."""
    event = Broadcaster().publish("session.killed", {"sessionKey": "s1", "agentId": "a1"})
    assert event.payload == {"sessionKey": "s1", "agentId": "a1"}


def test_publish_takes_an_event_and_keeps_its_timestamp() -> None:
    """An Event is published with its own type, payload and timestamp."""
    original = Event("session.killed", {"sessionKey": "s1", "agentId": "a1"})
    event = Broadcaster().publish(original)
    assert (event.type, event.payload, event.timestamp) == (
        original.type,
        original.payload,
        original.timestamp,
    )


def test_publish_validates_an_event_like_any_payload() -> None:
    """An Event's payload is validated and redacted through its type's dataclass."""
    with pytest.raises(ValueError, match="unknown field"):
        Broadcaster().publish(Event("session.killed", {"sessionKey": "s1", "agent": "a1"}))


def test_publish_ids_increase() -> None:
    """Ids of successive events increase within the stream."""
    broadcaster = Broadcaster()
    ids = [broadcaster.publish(killed(n)).id for n in range(5)]
    assert [seq(Event("x.y", id=i)) for i in ids] == [1, 2, 3, 4, 5]
    assert len({parse_id(i)[0] for i in ids}) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((Event("session.killed", {"sessionKey": "s", "agentId": "a"}), {}), "not both"),
        ((SessionKilled("s", "a"), {"sessionKey": "s"}), "no second argument"),
        ((42,), "cannot publish a int"),
        (({"sessionKey": "s", "agentId": "a"},), "cannot publish a dict"),
        (("deploy.unknown", {}), "unregistered event type"),
        (("session.killed", {"sessionKey": "s"}), "missing required field"),
    ],
)
def test_publish_refuses_what_is_not_a_valid_event(args: tuple[Any, ...], message: str) -> None:
    """Bad arguments, unregistered types and invalid payloads raise ValueError in the publisher."""
    broadcaster = Broadcaster()
    with pytest.raises(ValueError, match=message):
        broadcaster.publish(*args)
    assert broadcaster.stats()["published"] == 0


def test_invalid_event_reaches_no_subscriber() -> None:
    """An event refused by validation is never delivered."""
    broadcaster = Broadcaster()

    async def main() -> Event:
        async with broadcaster.subscribe() as events:
            with pytest.raises(ValueError):
                broadcaster.publish("agent.status", {"agentId": "a", "status": "on"})
            broadcaster.publish(killed(1))
            return await anext(events)

    assert keys([run(main())]) == ["s1"]


def test_publish_before_any_loop_keeps_the_event_for_later_subscribers() -> None:
    """Events published from sync code before a loop runs are retained for since."""
    broadcaster = Broadcaster()
    first = broadcaster.publish(killed(1))
    second = broadcaster.publish(killed(2))
    assert first.id is not None

    async def main() -> tuple[bool | None, list[Event]]:
        async with broadcaster.subscribe(since=first.id) as events:
            return events.resumed, await take(events, 1)

    assert run(main()) == (True, [second])


def test_epoch_start_replays_every_event_published_before_the_loop() -> None:
    """since=<epoch>:0 replays everything published before the loop, while nothing is trimmed."""
    broadcaster = Broadcaster()
    published = [broadcaster.publish(killed(n)) for n in range(3)]
    assert published[0].id is not None
    start = make_id(parse_id(published[0].id)[0], "0")

    async def main() -> list[Event]:
        async with broadcaster.subscribe(since=start) as events:
            assert events.resumed is True
            return await take(events, 3)

    assert run(main()) == published


def test_publish_from_another_thread_arrives_in_order() -> None:
    """Events published from a worker thread reach an open subscription, in order."""
    broadcaster = Broadcaster()

    async def main() -> list[Event]:
        async with broadcaster.subscribe() as events:
            worker = threading.Thread(
                target=lambda: [broadcaster.publish(killed(n)) for n in range(200)]
            )
            worker.start()
            got = await take(events, 200)
            worker.join()
            return got

    assert keys(run(main())) == [f"s{n}" for n in range(200)]


def test_apublish_returns_once_stored_with_an_id() -> None:
    """apublish returns the stored Event with its id set, and subscribers get it."""
    broadcaster = Broadcaster()

    async def main() -> tuple[Event, Event]:
        async with broadcaster.subscribe() as events:
            stored = await broadcaster.apublish(
                "session.killed", {"sessionKey": "s", "agentId": "a"}
            )
            return stored, await anext(events)

    stored, received = run(main())
    assert stored.id is not None
    assert received == stored


def test_apublish_refuses_an_invalid_event() -> None:
    """apublish raises ValueError for an invalid payload, like publish."""
    broadcaster = Broadcaster()
    with pytest.raises(ValueError, match="activeSessionCount"):
        run(broadcaster.apublish("agent.status", {"agentId": "a", "status": "idle"}))


def test_publish_between_event_loops_is_kept_for_the_next_one() -> None:
    """After a loop ends, events published from sync code or threads reach the next loop."""
    broadcaster = Broadcaster()
    before = broadcaster.publish(killed(0))

    async def touch() -> None:
        async with broadcaster.subscribe():
            pass

    run(touch())
    same_thread = broadcaster.publish(killed(1))
    other_thread: list[Event] = []
    worker = threading.Thread(target=lambda: other_thread.append(broadcaster.publish(killed(2))))
    worker.start()
    worker.join()
    assert before.id is not None

    async def main() -> list[Event]:
        async with broadcaster.subscribe(since=before.id) as events:
            return await take(events, 2)

    assert run(main()) == [same_thread, *other_thread]


# --------------------------------------------------------------------------- subscribe and resume


def test_subscribe_without_since_gets_live_events_only() -> None:
    """Without since, a subscription starts at the next event and resumed is None."""
    broadcaster = Broadcaster()
    broadcaster.publish(killed(0))

    async def main() -> tuple[bool | None, list[Event]]:
        async with broadcaster.subscribe() as events:
            broadcaster.publish(killed(1))
            return events.resumed, await take(events, 1)

    resumed, got = run(main())
    assert resumed is None
    assert keys(got) == ["s1"]


def test_subscribe_filters_by_type_globs() -> None:
    """A subscription gets only the types its globs match."""
    broadcaster = Broadcaster()

    async def main() -> list[Event]:
        async with broadcaster.subscribe(["session.*"]) as events:
            broadcaster.publish(AgentStatus("a1", "idle", 0))
            broadcaster.publish(killed(1))
            return await take(events, 1)

    assert keys(run(main())) == ["s1"]


def test_since_replays_exactly_the_missed_events_then_live_without_duplicates() -> None:
    """subscribe(since=id) yields every event after id, in order, then live ones, once each."""
    broadcaster = Broadcaster()
    published = [broadcaster.publish(killed(n)) for n in range(5)]

    async def main() -> list[Event]:
        assert published[1].id is not None
        async with broadcaster.subscribe(since=published[1].id) as events:
            assert events.resumed is True
            replayed = await take(events, 3)
            broadcaster.publish(killed(5))
            return [*replayed, *await take(events, 1)]

    assert keys(run(main())) == ["s2", "s3", "s4", "s5"]


def test_since_replays_only_the_types_asked_for() -> None:
    """A replay applies the subscription's type filter."""
    broadcaster = Broadcaster()
    first = broadcaster.publish(killed(0))
    broadcaster.publish(AgentStatus("a1", "idle", 0))
    broadcaster.publish(killed(1))
    assert first.id is not None

    async def main() -> list[Event]:
        async with broadcaster.subscribe(["session.*"], since=first.id) as events:
            broadcaster.publish(AgentStatus("a1", "running", 1))
            broadcaster.publish(killed(2))
            return await take(events, 2)

    assert keys(run(main())) == ["s1", "s2"]


def test_since_the_newest_event_replays_nothing() -> None:
    """Resuming from the newest event is granted and the next event is the next live one."""
    broadcaster = Broadcaster()
    newest = [broadcaster.publish(killed(n)) for n in range(3)][-1]
    assert newest.id is not None

    async def main() -> tuple[bool | None, list[Event]]:
        async with broadcaster.subscribe(since=newest.id) as events:
            broadcaster.publish(killed(3))
            return events.resumed, await take(events, 1)

    resumed, got = run(main())
    assert resumed is True
    assert keys(got) == ["s3"]


def test_resume_while_another_thread_publishes_has_no_gap_or_duplicate() -> None:
    """A since-subscription opened mid-stream sees every later event exactly once, in order."""
    broadcaster = Broadcaster(history=5000)
    total = 2000
    published: list[Event] = []
    halfway = threading.Event()

    def produce() -> None:
        for n in range(total):
            published.append(broadcaster.publish(killed(n)))
            if n == 100:
                halfway.set()

    async def main() -> list[Event]:
        worker = threading.Thread(target=produce)
        worker.start()
        await asyncio.to_thread(halfway.wait)
        since = published[50]
        assert since.id is not None
        async with broadcaster.subscribe(since=since.id) as events:
            assert events.resumed is True
            got = await take(events, total - 51)
        worker.join()
        return got

    assert [seq(e) for e in run(main())] == list(range(52, total + 1))


class RacingReplay(MemoryBackend):
    """A memory backend where events arrive while a replay is being fetched, as with Redis."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.before: Callable[[], object] = lambda: None
        self.after: Callable[[], object] = lambda: None

    async def replay(self, since: str) -> list[Event] | None:
        self.before()
        events = await super().replay(since)
        self.after()
        return events


def in_thread(work: Callable[[], object]) -> Callable[[], None]:
    """Run ``work`` in another thread and wait for it (a publish from a worker thread)."""

    def go() -> None:
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()

    return go


def test_events_racing_a_replay_arrive_once_after_it() -> None:
    """Events published while the replay is fetched come after it, none missing, none twice."""
    backend = RacingReplay()
    broadcaster = Broadcaster(backend)
    first = broadcaster.publish(killed(0))
    broadcaster.publish(killed(1))
    backend.before = in_thread(lambda: broadcaster.publish(killed(2)))  # lands in the replay
    backend.after = lambda: broadcaster.publish(killed(3))  # lands after it
    assert first.id is not None

    async def main() -> list[Event]:
        async with broadcaster.subscribe(since=first.id) as events:
            got = await take(events, 3)
            broadcaster.publish(killed(4))
            return [*got, *await take(events, 1)]

    assert keys(run(main())) == ["s1", "s2", "s3", "s4"]


def test_events_racing_a_refused_resume_are_still_delivered_live() -> None:
    """When since is not retained, events that arrived during the attempt are not lost."""
    backend = RacingReplay(history=1)
    broadcaster = Broadcaster(backend, history=1)
    first = broadcaster.publish(killed(0))
    broadcaster.publish(killed(1))
    backend.before = in_thread(lambda: broadcaster.publish(killed(2)))
    backend.after = lambda: broadcaster.publish(killed(3))
    assert first.id is not None

    async def main() -> tuple[bool | None, list[Event]]:
        async with broadcaster.subscribe(since=first.id) as events:
            return events.resumed, await take(events, 2)

    resumed, got = run(main())
    assert resumed is False
    assert keys(got) == ["s2", "s3"]


def test_since_trimmed_from_history_is_not_resumed() -> None:
    """A since no longer retained gives resumed=False and no replay, then live events."""
    broadcaster = Broadcaster(history=3)
    published = [broadcaster.publish(killed(n)) for n in range(5)]
    assert published[1].id is not None

    async def main() -> tuple[bool | None, list[Event]]:
        async with broadcaster.subscribe(since=published[1].id) as events:
            broadcaster.publish(killed(5))
            return events.resumed, await take(events, 1)

    resumed, got = run(main())
    assert resumed is False
    assert keys(got) == ["s5"]


def test_since_from_another_epoch_is_not_resumed() -> None:
    """An id from another stream (e.g. before a restart) gives resumed=False."""
    old = Broadcaster().publish(killed(0))
    broadcaster = Broadcaster()
    broadcaster.publish(killed(1))
    assert old.id is not None
    assert parse_id(old.id)[1] == (1,)  # the same position, but another epoch

    async def main() -> bool | None:
        async with broadcaster.subscribe(since=old.id) as events:
            return events.resumed

    assert run(main()) is False


@pytest.mark.parametrize("position", ["999", "1700000000000-0"])
def test_since_never_issued_in_this_epoch_is_not_resumed(position: str) -> None:
    """An id past the newest event, or of another backend's shape, gives resumed=False."""
    broadcaster = Broadcaster()
    first = broadcaster.publish(killed(0))
    assert first.id is not None
    since = make_id(parse_id(first.id)[0], position)

    async def main() -> bool | None:
        async with broadcaster.subscribe(since=since) as events:
            return events.resumed

    assert run(main()) is False


@pytest.mark.parametrize("since", ["", "17", "epoch:", "not an id"])
def test_subscribe_refuses_a_malformed_since(since: str) -> None:
    """A since that is not an event id raises ValueError."""
    broadcaster = Broadcaster()

    async def main() -> None:
        async with broadcaster.subscribe(since=since):
            pass

    with pytest.raises(ValueError, match="malformed event id"):
        run(main())


def test_last_event_id_is_the_newest_event_when_the_subscription_opens() -> None:
    """Subscription.last_event_id names the newest event of the stream."""
    broadcaster = Broadcaster()
    newest = [broadcaster.publish(killed(n)) for n in range(3)][-1]

    async def main() -> str:
        async with broadcaster.subscribe() as events:
            return events.last_event_id

    assert run(main()) == newest.id


def test_last_event_id_of_an_empty_stream_is_valid_as_since() -> None:
    """While the stream is empty, last_event_id marks the epoch's start and resumes from it."""
    broadcaster = Broadcaster()

    async def main() -> list[Event]:
        async with broadcaster.subscribe() as events:
            start = events.last_event_id
        published = [broadcaster.publish(killed(n)) for n in range(2)]
        async with broadcaster.subscribe(since=start) as events:
            assert events.resumed is True
            assert await take(events, 2) == published
        return published

    run(main())


# --------------------------------------------------------------------------- history


def test_history_keeps_the_most_recent_events() -> None:
    """With history=3, the newest three events are retained; since=the oldest of them resumes."""
    broadcaster = Broadcaster(history=3)
    published = [broadcaster.publish(killed(n)) for n in range(6)]
    assert published[3].id is not None
    assert published[2].id is not None

    async def main() -> tuple[list[Event], bool | None]:
        async with broadcaster.subscribe(since=published[3].id) as events:
            assert events.resumed is True
            replayed = await take(events, 2)
        async with broadcaster.subscribe(since=published[2].id) as events:
            return replayed, events.resumed

    replayed, resumed_from_trimmed = run(main())
    assert replayed == published[4:]
    assert resumed_from_trimmed is False


def test_history_zero_resumes_only_from_the_newest_event() -> None:
    """With history=0 only the newest id (welcome's lastEventId) resumes; older ones cannot."""
    broadcaster = Broadcaster(history=0)
    older = broadcaster.publish(killed(0))
    newest = broadcaster.publish(killed(1))
    assert older.id is not None
    assert newest.id is not None

    async def main(since: str) -> tuple[bool | None, str]:
        async with broadcaster.subscribe(since=since) as events:
            return events.resumed, events.last_event_id

    assert run(main(older.id)) == (False, newest.id)
    assert run(main(newest.id)) == (True, newest.id)


def test_replay_is_delivered_whole_beyond_queue_size() -> None:
    """A replay longer than queue_size is delivered whole; queue_size bounds live events only."""
    broadcaster = Broadcaster(queue_size=2)
    published = [broadcaster.publish(killed(n)) for n in range(10)]
    assert published[0].id is not None

    async def main() -> list[Event]:
        async with broadcaster.subscribe(since=published[0].id) as events:
            return await take(events, 9)

    assert run(main()) == published[1:]
    assert broadcaster.stats()["replayed"] == 9
    assert broadcaster.stats()["slow_disconnects"] == 0


# --------------------------------------------------------------------------- slow consumers


def test_slow_subscriber_is_disconnected_with_slow_consumer() -> None:
    """With slow_consumer="disconnect", a full queue ends the iterator with SlowConsumer."""
    broadcaster = Broadcaster(queue_size=2)

    async def main() -> None:
        async with broadcaster.subscribe() as events:
            for n in range(3):
                broadcaster.publish(killed(n))
            with pytest.raises(SlowConsumer):
                await anext(events)

    run(main())
    assert broadcaster.stats()["slow_disconnects"] == 1


def test_slow_subscriber_does_not_hold_up_the_others() -> None:
    """A subscriber that keeps up gets every event while a slow one is disconnected."""
    broadcaster = Broadcaster(queue_size=2)

    async def main() -> list[Event]:
        async with broadcaster.subscribe() as slow, broadcaster.subscribe() as fast:
            got = []
            for n in range(4):
                broadcaster.publish(killed(n))
                got.append(await anext(fast))
            with pytest.raises(SlowConsumer):
                await anext(slow)
            broadcaster.publish(killed(4))
            got.append(await anext(fast))
            return got

    assert keys(run(main())) == ["s0", "s1", "s2", "s3", "s4"]


def test_drop_policy_drops_the_oldest_and_counts_it() -> None:
    """With slow_consumer="drop", a full queue loses its oldest events and counts them."""
    broadcaster = Broadcaster(queue_size=2, slow_consumer="drop")

    async def main() -> list[Event]:
        async with broadcaster.subscribe() as events:
            for n in range(5):
                broadcaster.publish(killed(n))
            got = await take(events, 2)
            broadcaster.publish(killed(5))
            return [*got, *await take(events, 1)]

    assert keys(run(main())) == ["s3", "s4", "s5"]
    stats = broadcaster.stats()
    assert stats["dropped"] == 3
    assert stats["slow_disconnects"] == 0


# --------------------------------------------------------------------------- numbers


def test_stats_has_the_documented_keys() -> None:
    """stats() has at least the counters SPEC section 1 names, all zero at first."""
    stats = Broadcaster().stats()
    assert set(stats) >= STATS_KEYS
    assert all(stats[key] == 0 for key in STATS_KEYS)


def test_stats_count_published_delivered_and_replayed() -> None:
    """published counts accepted events, delivered those handed out, replayed those resent."""
    broadcaster = Broadcaster()
    first = broadcaster.publish(killed(0))
    broadcaster.publish(killed(1))
    assert first.id is not None

    async def main() -> None:
        async with broadcaster.subscribe(since=first.id) as events:
            await broadcaster.apublish(killed(2))
            await take(events, 2)

    run(main())
    stats = broadcaster.stats()
    assert stats["published"] == 3
    assert stats["delivered"] == 2
    assert stats["replayed"] == 1
    assert stats["publish_failures"] == 0


def test_subscribe_consumers_are_not_websocket_connections() -> None:
    """connection_count and stats()["connections"] count WebSocket connections only."""
    broadcaster = Broadcaster()

    async def main() -> tuple[int, int]:
        async with broadcaster.subscribe():
            return broadcaster.connection_count, broadcaster.stats()["connections"]

    assert run(main()) == (0, 0)


def test_each_broadcast_is_serialized_once_for_all_subscribers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With 50 subscribers attached, one broadcast calls Event.to_json once."""
    calls: list[Event] = []
    real = Event.to_json

    def counting(self: Event) -> str:
        calls.append(self)
        return real(self)

    monkeypatch.setattr(Event, "to_json", counting)
    broadcaster = Broadcaster()

    async def main() -> list[Event]:
        async with contextlib.AsyncExitStack() as stack:
            subscriptions = [
                await stack.enter_async_context(broadcaster.subscribe()) for _ in range(50)
            ]
            calls.clear()
            broadcaster.publish(killed(0))
            return [await anext(events) for events in subscriptions]

    received = run(main())
    assert len(calls) == 1
    assert keys(received) == ["s0"] * 50


# --------------------------------------------------------------------------- lifecycle


def test_close_ends_every_subscription() -> None:
    """Broadcaster.close() ends open subscriptions' iteration."""
    broadcaster = Broadcaster()

    async def main() -> list[Event]:
        async with broadcaster.subscribe() as events:
            waiting = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0)  # let the consumer block on an empty queue
            await broadcaster.close()
            with pytest.raises(StopAsyncIteration):
                await waiting
            return [e async for e in events]

    assert run(main()) == []


def test_start_is_idempotent() -> None:
    """Starting twice in the same loop is harmless."""
    broadcaster = Broadcaster()

    async def main() -> list[Event]:
        await broadcaster.start()
        await broadcaster.start()
        async with broadcaster.subscribe() as events:
            broadcaster.publish(killed(0))
            return await take(events, 1)

    assert keys(run(main())) == ["s0"]


class SlowStart(MemoryBackend):
    """A backend that takes a moment to start, as a network connection does."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = 0

    async def start(self, deliver: Any, control: Any = None) -> str:
        self.starts += 1
        await asyncio.sleep(0)
        return await super().start(deliver, control)


def test_concurrent_first_uses_start_the_backend_once() -> None:
    """Several tasks starting the broadcaster at once share one backend start."""
    backend = SlowStart()
    broadcaster = Broadcaster(backend)

    async def main() -> list[Event]:
        await asyncio.gather(*(broadcaster.start() for _ in range(5)))
        async with broadcaster.subscribe() as events:
            broadcaster.publish(killed(0))
            return await take(events, 1)

    assert keys(run(main())) == ["s0"]
    assert backend.starts == 1


def test_a_broadcaster_started_in_another_loop_serves_this_one_too() -> None:
    """Started in a loop of another thread, the broadcaster delivers to a subscriber here."""
    broadcaster = Broadcaster()
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(broadcaster.start(), other).result(timeout=10)

        async def main() -> list[Event]:
            async with broadcaster.subscribe() as events:
                broadcaster.publish(killed(0))
                return await take(events, 1)

        assert keys(run(main())) == ["s0"]
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join()
        other.close()


class FailingStart(MemoryBackend):
    """A backend whose first start fails, as a Redis server that is not up yet."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def start(self, deliver: Any, control: Any = None) -> str:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("backend not reachable")
        return await super().start(deliver, control)


def test_a_failed_start_raises_and_the_next_use_retries() -> None:
    """A backend that fails to start raises to the caller; the next use starts it again."""
    broadcaster = Broadcaster(FailingStart())

    async def main() -> list[Event]:
        with pytest.raises(ConnectionError, match="not reachable"):
            await broadcaster.start()
        async with broadcaster.subscribe() as events:
            broadcaster.publish(killed(0))
            return await take(events, 1)

    assert keys(run(main())) == ["s0"]


def test_close_before_start_is_harmless() -> None:
    """Closing a broadcaster that never started does nothing."""
    broadcaster = Broadcaster()
    run(broadcaster.close())
    assert broadcaster.stats()["connections"] == 0


def test_last_event_id_follows_the_newest_event() -> None:
    """last_event_id is the newest event id delivered."""
    broadcaster = Broadcaster()

    async def main() -> tuple[str, str]:
        await broadcaster.start()
        start = broadcaster.last_event_id
        event = await broadcaster.apublish(killed(0))
        assert event.id is not None
        assert broadcaster.last_event_id == event.id
        return start, event.id

    start, newest = run(main())
    assert parse_id(start)[0] == parse_id(newest)[0]
    assert parse_id(start)[1] == (0,)


def test_repr_names_the_backend_and_connections() -> None:
    """repr shows the backend type and the connection count."""
    assert repr(Broadcaster()) == "Broadcaster(MemoryBackend, connections=0)"


def test_a_connection_starts_the_broadcaster_itself() -> None:
    """connection() needs no start() first: a mounted endpoint gets no lifespan events."""
    broadcaster = Broadcaster()

    async def main() -> str:
        async with broadcaster.connection() as conn:
            return conn.last_event_id

    assert parse_id(run(main()))[1] == (0,)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"history": -1}, "history"),
        ({"history": 1.5}, "history"),
        ({"history": "10"}, "history"),
        ({"queue_size": 0}, "queue_size"),
        ({"queue_size": -5}, "queue_size"),
        ({"queue_size": None}, "queue_size"),
        ({"slow_consumer": "block"}, "slow_consumer"),
        ({"slow_consumer": None}, "slow_consumer"),
        ({"backend": 42}, "backend"),
        ({"backend": object()}, "backend"),
        ({"backend": "ftp://example.com"}, "backend URL"),
    ],
)
def test_invalid_constructor_arguments_are_configuration_errors(
    kwargs: dict[str, Any], message: str
) -> None:
    """Bad history, queue_size, slow_consumer or backend raise ConfigurationError at once."""
    with pytest.raises(ConfigurationError, match=message):
        Broadcaster(**kwargs)


@pytest.mark.parametrize("backend", [None, "memory://"])
def test_default_and_memory_url_use_the_memory_backend(backend: str | None) -> None:
    """None and "memory://" both build an in-process MemoryBackend with the given history."""
    broadcaster = Broadcaster(backend, history=7)
    assert isinstance(broadcaster.backend, MemoryBackend)
    assert broadcaster.backend.history_size == 7


def test_a_backend_instance_is_used_as_given() -> None:
    """A Backend instance is used as is."""
    backend = MemoryBackend(history=3)
    assert Broadcaster(backend).backend is backend


def test_subscribe_reads_a_string_of_types_as_comma_separated_globs() -> None:
    """A bare string is a comma-separated list of globs, never read letter by letter."""
    broadcaster = Broadcaster()

    async def main() -> list[Event]:
        async with broadcaster.subscribe("session.*, cron.*") as events:  # type: ignore[arg-type]
            broadcaster.publish(
                "agent.status", {"agentId": "a1", "status": "idle", "activeSessionCount": 0}
            )
            broadcaster.publish(killed(0))
            return await take(events, 1)

    assert keys(run(main())) == ["s0"]


def test_subscribe_refuses_globs_that_break_the_wire_rules() -> None:
    """An empty list, an empty glob or a character outside the glob alphabet is a ValueError."""
    broadcaster = Broadcaster()

    async def main(types: Any) -> None:
        async with broadcaster.subscribe(types):
            pass

    for types in ([], [""], ["session/*"], [7]):
        with pytest.raises(ValueError, match="glob"):
            run(main(types))


def test_refused_resume_keeps_the_live_events_already_queued() -> None:
    """When since is not retained, live events queued for the subscriber are still delivered."""
    other = Broadcaster()
    foreign = other.publish(killed(99))
    broadcaster = Broadcaster()

    async def main() -> tuple[bool | None, list[Event]]:
        async with broadcaster.connection(dashboard=False) as conn:
            queued = [broadcaster.publish(killed(n)) for n in range(3)]
            assert [frame.event for frame in conn.outbox] == queued
            resumed = await conn.subscribe(["*"], foreign.id)
            return resumed, [frame.event for frame in conn.outbox if frame.event is not None]

    resumed, delivered = run(main())
    assert resumed is False
    assert [e.payload["sessionKey"] for e in delivered] == ["s0", "s1", "s2"]
