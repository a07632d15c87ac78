"""RedisBackend through Broadcaster("redis://...") and subscribe(), against private servers."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from livepanel import BackendUnavailable, Broadcaster, ConfigurationError, Event, get_broadcaster
from livepanel.backends import backend_from_url
from livepanel.backends.redis import RedisBackend, redact_url
from livepanel.events import CronExecuted
from livepanel.protocol import parse_id
from tests.redis.redis_helpers import (
    RedisServer,
    Tick,
    apublish_retrying,
    nothing_more,
    numbers,
    run,
    started,
    take,
    wait_until,
)

pytestmark = pytest.mark.redis

STREAM = "livepanel:events"


def epoch_in_redis(url: str, stream: str = STREAM) -> str | None:
    with redis.Redis.from_url(url) as client:
        value = client.hget(f"{stream}:epoch", "epoch")
    return None if value is None else value.decode()


async def failures_reach(b: Broadcaster, count: int) -> None:
    await wait_until(lambda: b.stats()["publish_failures"] == count, what=f"{count} failures")


def kill_connections(url: str, name: str = "livepanel") -> None:
    """Drop every connection a backend named ``name`` holds, as a network blip would."""
    with redis.Redis.from_url(url) as client:
        for info in client.client_list():
            if info.get("name") == name:
                client.client_kill_filter(_id=info["id"])


def test_published_events_reach_a_subscriber_in_order(redis_url: str) -> None:
    """publish() from the loop's thread: every event arrives once, in order."""

    async def scenario() -> list[int]:
        async with started(Broadcaster(redis_url)) as b, b.subscribe() as events:
            for n in range(50):
                b.publish(Tick(n=n))
            got = numbers(await take(events, 50))
            assert await nothing_more(events)
            return got

    assert run(scenario()) == list(range(50))


def test_ids_carry_the_epoch_and_the_entry_id(redis_url: str) -> None:
    """apublish() returns the id subscribers see: "<epoch>:<entry id>", increasing."""

    async def scenario() -> None:
        async with started(Broadcaster(redis_url)) as b, b.subscribe() as events:
            stored = [await b.apublish(Tick(n=n)) for n in range(3)]
            received = await take(events, 3)
            assert [e.id for e in received] == [e.id for e in stored]
            epochs = {parse_id(e.id)[0] for e in received}
            assert epochs == {epoch_in_redis(redis_url)}
            positions = [parse_id(e.id)[1] for e in received]
            assert all(len(p) == 2 for p in positions)
            assert positions == sorted(positions)
            assert len(set(positions)) == 3

    run(scenario())


def test_an_empty_stream_gives_a_start_id_valid_as_since(redis_url: str) -> None:
    """On an empty stream the head is "<epoch>:0-0", and it resumes every later event."""

    async def scenario() -> None:
        async with started(Broadcaster(redis_url)) as b:
            async with b.subscribe() as events:
                head = events.last_event_id
            assert head == f"{epoch_in_redis(redis_url)}:0-0"
            for n in range(3):
                await b.apublish(Tick(n=n))
            async with b.subscribe(since=head) as events:
                assert events.resumed is True
                assert numbers(await take(events, 3)) == [0, 1, 2]
                assert await nothing_more(events)

    run(scenario())


def test_since_replays_exactly_the_missed_events_then_live(redis_url: str) -> None:
    """Resuming after event 3 replays 4..9, then live events follow without a gap or repeat."""

    async def scenario() -> None:
        async with started(Broadcaster(redis_url)) as b:
            stored = [await b.apublish(Tick(n=n)) for n in range(10)]
            async with b.subscribe(since=stored[3].id) as events:
                assert events.resumed is True
                b.publish(Tick(n=10))
                got = await take(events, 7)
                assert numbers(got) == list(range(4, 11))
                assert [e.id for e in got[:6]] == [e.id for e in stored[4:]]
                assert await nothing_more(events)

    run(scenario())


def test_a_replay_longer_than_a_page_is_read_in_pages_whole_and_in_order(
    redis_url: str,
) -> None:
    """2,500 missed entries come back through XRANGE pages of 1,000: all, in order, once."""

    async def scenario() -> None:
        async with started(Broadcaster(redis_url, history=3000)) as b:
            first = await b.apublish(Tick(n=0))
            for n in range(1, 2501):
                b.publish(Tick(n=n))
            last = await b.apublish(Tick(n=2501))
            assert last.id is not None
            async with b.subscribe(since=first.id) as events:
                assert events.resumed is True
                got = await take(events, 2501)
                assert numbers(got) == list(range(1, 2502))
                assert got[-1].id == last.id

    run(scenario())


def test_a_since_from_another_process_resumes_once_this_reader_has_caught_up(
    redis_url: str,
) -> None:
    """A since newer than anything this process delivered yet: no repeat, no gap."""

    async def scenario() -> None:
        async with (
            started(Broadcaster(redis_url)) as here,
            started(Broadcaster(redis_url)) as there,
        ):
            stored = [await there.apublish(Tick(n=n)) for n in range(20)]
            # resume at once, before this process's reader may have read them all
            async with here.subscribe(since=stored[-1].id) as events:
                assert events.resumed is True
                await there.apublish(Tick(n=20))
                assert numbers(await take(events, 1)) == [20]
                assert await nothing_more(events)

    run(scenario())


def test_a_trimmed_since_is_not_resumed(redis_url: str) -> None:
    """A since whose entry fell out of the stream's history gets resumed=False."""

    async def scenario() -> None:
        async with started(Broadcaster(redis_url, history=10)) as b:
            first = await b.apublish(Tick(n=0))
            for n in range(1, 400):
                b.publish(Tick(n=n))
            last = await b.apublish(Tick(n=400))
            with redis.Redis.from_url(redis_url) as client:
                assert client.xlen(STREAM) < 400  # MAXLEN ~ trimmed it
            async with b.subscribe(since=first.id) as events:
                assert events.resumed is False
            async with b.subscribe(since=last.id) as events:
                assert events.resumed is True

    run(scenario())


def test_a_deleted_stream_starts_a_new_epoch(redis_url: str) -> None:
    """DEL of the stream: the next event is in a new epoch, an old since is unavailable,
    and a live subscriber goes on receiving."""

    async def scenario() -> None:
        async with started(Broadcaster(redis_url)) as b, b.subscribe() as live:
            old = await b.apublish(Tick(n=1))
            await take(live, 1)
            with redis.Redis.from_url(redis_url) as client:
                client.delete(STREAM)
            new = await b.apublish(Tick(n=2))
            assert parse_id(new.id)[0] != parse_id(old.id)[0]
            got = await take(live, 1)
            assert numbers(got) == [2]
            assert got[0].id == new.id
            async with b.subscribe(since=old.id) as events:
                assert events.resumed is False
            async with b.subscribe(since=new.id) as events:
                assert events.resumed is True

    run(scenario())


def test_a_restart_without_persistence_starts_a_new_epoch(redis_server: RedisServer) -> None:
    """Redis restarted empty: old ids are unavailable, live delivery goes on in the new epoch."""

    async def scenario() -> None:
        backend = RedisBackend(redis_server.url, reconnect_delay=0.05, reconnect_max_delay=0.2)
        async with started(Broadcaster(backend)) as b, b.subscribe() as live:
            old = await b.apublish(Tick(n=1))
            await take(live, 1)
            await asyncio.to_thread(redis_server.restart)
            new = await apublish_retrying(b, 2)
            assert parse_id(new.id)[0] != parse_id(old.id)[0]
            got = await take(live, 1)
            assert got[0].id == new.id
            async with b.subscribe(since=old.id) as events:
                assert events.resumed is False

    run(scenario())


def test_the_reader_resumes_after_a_restart_from_its_last_id(
    persistent_redis: RedisServer,
) -> None:
    """Events written while this process's reader was away arrive after it reconnects,
    in order, in the same epoch (the stream survived the restart on AOF)."""

    async def scenario() -> None:
        slow = RedisBackend(persistent_redis.url, reconnect_delay=1.0, reconnect_max_delay=1.0)
        async with (
            started(Broadcaster(slow)) as here,
            started(Broadcaster(persistent_redis.url)) as there,
            here.subscribe() as events,
        ):
            before = await there.apublish(Tick(n=0))
            assert numbers(await take(events, 1)) == [0]
            await asyncio.to_thread(persistent_redis.restart)
            away = [await apublish_retrying(there, n) for n in range(1, 6)]
            assert here.stats()["reader_reconnects"] == 0  # written while the reader was away
            got = await take(events, 5, timeout=10)
            assert numbers(got) == [1, 2, 3, 4, 5]
            assert [e.id for e in got] == [e.id for e in away]
            assert parse_id(got[0].id)[0] == parse_id(before.id)[0]
            assert here.stats()["reader_reconnects"] == 1
            async with here.subscribe(since=before.id) as resumed:
                assert resumed.resumed is True
                assert numbers(await take(resumed, 5)) == [1, 2, 3, 4, 5]

    run(scenario())


def test_apublish_raises_backend_unavailable_when_redis_is_down(
    redis_server: RedisServer,
) -> None:
    """With Redis gone, apublish() raises BackendUnavailable promptly and names the server."""

    async def scenario() -> None:
        async with started(Broadcaster(redis_server.url)) as b:
            await b.apublish(Tick(n=1))
            redis_server.kill()
            began = time.monotonic()
            with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{redis_server.port}"):
                await b.apublish(Tick(n=2))
            assert time.monotonic() - began < 2

    run(scenario())


def test_redis_down_at_start_raises_backend_unavailable_and_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """No Redis at start: apublish/subscribe raise, publish() keeps the event; once Redis
    is there the broadcaster starts and writes it. The password is never logged."""
    redis_server.kill()
    url = f"redis://:hunter2@127.0.0.1:{redis_server.port}/0"

    async def scenario() -> None:
        b = Broadcaster(url)
        try:
            b.publish(Tick(n=1))
            with pytest.raises(BackendUnavailable, match="cannot reach Redis"):
                await b.apublish(Tick(n=2))
            with pytest.raises(BackendUnavailable):
                async with b.subscribe():
                    pass
            await asyncio.to_thread(redis_server.start)
            with redis.Redis.from_url(redis_server.url) as client:
                client.config_set("requirepass", "hunter2")
            async with b.subscribe(since=None) as events:
                head = events.last_event_id
            async with b.subscribe(since=head) as events:
                assert numbers(await take(events, 1)) == [1]
        finally:
            await b.close()

    caplog.set_level(logging.INFO, "livepanel")
    run(scenario())
    assert "hunter2" not in caplog.text


def test_publish_failures_are_logged_once_per_outage_and_counted(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each dropped event counts in publish_failures; each outage logs one warning,
    without payload values."""

    def outage_warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "livepanel" and "cannot write to Redis" in r.getMessage()
        ]

    async def scenario() -> None:
        async with started(Broadcaster(redis_server.url)) as b, b.subscribe() as events:
            for outage in (1, 2):
                redis_server.kill()
                for n in range(5):
                    b.publish(
                        CronExecuted(
                            job_id="j", command="deploy --token s3cr3t", exit_code=n, duration_ms=1
                        )
                    )
                await failures_reach(b, 5 * outage)
                assert len(outage_warnings()) == outage
                await asyncio.to_thread(redis_server.start)
                await apublish_retrying(b, outage)
                b.publish(Tick(n=100 + outage))
                got = [e for e in await take(events, 2, timeout=10) if e.type == "test.tick"]
                assert numbers(got)[-1] == 100 + outage
            assert b.stats()["publish_failures"] == 10

    caplog.set_level(logging.INFO, "livepanel")
    run(scenario())
    assert "s3cr3t" not in caplog.text
    assert "deploy" not in caplog.text
    assert any(
        "writing to Redis" in r.getMessage() and "again" in r.getMessage() for r in caplog.records
    )


def test_publish_from_other_threads(redis_url: str) -> None:
    """publish() from plain threads reaches the subscriber; each thread's order is kept."""

    async def scenario() -> None:
        async with started(Broadcaster(redis_url)) as b, b.subscribe() as events:

            def worker(offset: int) -> None:
                for n in range(offset, offset + 25):
                    b.publish(Tick(n=n))

            threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(4)]
            for t in threads:
                t.start()
            await asyncio.to_thread(lambda: [t.join(5) for t in threads])
            got = numbers(await take(events, 100))
            for k in range(4):
                assert [n for n in got if n // 1000 == k] == list(range(k * 1000, k * 1000 + 25))

    run(scenario())


def test_events_published_before_start_are_written_at_start(redis_url: str) -> None:
    """Published with no loop running: they wait, then reach Redis when the broadcaster starts."""
    b = Broadcaster(redis_url)
    for n in range(3):
        b.publish(Tick(n=n))
    assert b.stats()["publish_pending"] == 3

    async def scenario() -> None:
        async with started(b), b.subscribe() as events:
            assert numbers(await take(events, 3)) == [0, 1, 2]
            assert b.stats()["publish_pending"] == 0

    run(scenario())


def test_backend_url_env_selects_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """LIVEPANEL_BACKEND_URL=redis://...?stream=... drives the default broadcaster."""
    monkeypatch.setenv("LIVEPANEL_BACKEND_URL", f"{redis_url}?stream=app:events")
    b = get_broadcaster()
    assert isinstance(b.backend, RedisBackend)
    assert b.backend.stream == "app:events"

    async def scenario() -> None:
        async with started(b), b.subscribe() as events:
            stored = await b.apublish(Tick(n=7))
            assert (await take(events, 1))[0].id == stored.id
        assert epoch_in_redis(redis_url, "app:events") == parse_id(stored.id)[0]

    run(scenario())


def test_history_is_passed_from_the_url_and_bounded_below() -> None:
    """backend_from_url hands history on; the stream never keeps fewer than 100 entries."""
    big = backend_from_url("redis://127.0.0.1:1/0", history=5000)
    small = backend_from_url("rediss://127.0.0.1:1/0", history=3)
    assert isinstance(big, RedisBackend)
    assert isinstance(small, RedisBackend)
    assert (big.maxlen, small.maxlen) == (5000, 100)


def test_urls_are_logged_without_their_password() -> None:
    """redact_url hides the password in the user info and in the query."""
    assert redact_url("redis://user:pa55@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("rediss://:pa55@host/1") == "rediss://:***@host/1"
    assert "pa55" not in redact_url("redis://host/0?password=pa55&db=1")
    assert repr(RedisBackend("redis://u:pa55@127.0.0.1:1/0")).count("pa55") == 0


def test_a_history_that_went_back_starts_a_new_epoch(redis_url: str) -> None:
    """A stream whose newest entry is older than what a reader saw (Redis restored an older
    snapshot): the reader retires the epoch, so old ids can never match new entries."""

    async def scenario() -> None:
        backend = RedisBackend(redis_url, reconnect_delay=0.2, reconnect_max_delay=0.2)
        async with started(Broadcaster(backend)) as b, b.subscribe() as live:
            old = [await b.apublish(Tick(n=n)) for n in range(3)]
            await take(live, 3)
            with redis.Redis.from_url(redis_url) as client:
                pipe = client.pipeline(transaction=True)
                pipe.delete(STREAM)
                pipe.xadd(STREAM, {"event": Event("test.tick", {"n": -1}).to_json()}, id="1-1")
                pipe.execute()
            kill_connections(redis_url)
            old_epoch = parse_id(old[0].id)[0]
            await wait_until(lambda: backend.epoch != old_epoch, what="a new epoch")
            new = await apublish_retrying(b, 3)
            assert parse_id(new.id)[0] == backend.epoch
            assert numbers(await take(live, 1)) == [3]
            async with b.subscribe(since=old[-1].id) as events:
                assert events.resumed is False

    run(scenario())


def test_a_reader_that_fell_behind_the_history_warns_and_goes_on(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Entries trimmed before this process read them: a warning, then live delivery again."""

    async def scenario() -> None:
        slow = RedisBackend(redis_url, history=10, reconnect_delay=1.0, reconnect_max_delay=1.0)
        other = RedisBackend(redis_url, history=10, client_name="other")
        async with (
            started(Broadcaster(slow)) as here,
            started(Broadcaster(other)) as there,
            here.subscribe() as live,
        ):
            await there.apublish(Tick(n=0))
            assert numbers(await take(live, 1)) == [0]
            kill_connections(redis_url)
            for n in range(1, 400):
                there.publish(Tick(n=n))
            await there.apublish(Tick(n=400))
            await wait_until(lambda: "were trimmed" in caplog.text, what="the warning")
            got = numbers(await take(live, 100))
            assert got == sorted(got)
            assert got[0] > 1

    caplog.set_level(logging.INFO, "livepanel")
    run(scenario())


def test_malformed_entries_are_skipped(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Entries that are not livepanel events (another writer) are skipped with a warning."""

    async def scenario() -> None:
        async with started(Broadcaster(redis_url)) as b, b.subscribe() as live:
            with redis.Redis.from_url(redis_url) as client:
                client.xadd(STREAM, {"event": "not json"})
                client.xadd(STREAM, {"other": "field"})
            await b.apublish(Tick(n=1))
            assert numbers(await take(live, 1)) == [1]

    caplog.set_level(logging.INFO, "livepanel")
    run(scenario())
    assert caplog.text.count("not a livepanel event") == 2


def test_a_client_passed_in_is_used_and_left_open(redis_url: str) -> None:
    """RedisBackend(client): RESP2 and decoded replies work; stop() does not close the client."""

    async def scenario() -> None:
        client = AsyncRedis.from_url(redis_url, decode_responses=True, protocol=2)
        try:
            async with started(Broadcaster(RedisBackend(client))) as b, b.subscribe() as live:
                first = await b.apublish(Tick(n=1))
                b.publish(Tick(n=2))
                assert numbers(await take(live, 2)) == [1, 2]
                async with b.subscribe(since=first.id) as events:
                    assert events.resumed is True
                    assert numbers(await take(events, 1)) == [2]
            assert await client.ping()
        finally:
            await client.aclose()

    run(scenario())


def test_held_events_are_bounded_by_max_pending(redis_url: str) -> None:
    """Before start at most max_pending events wait; the rest are counted as failures."""
    b = Broadcaster(RedisBackend(redis_url, max_pending=2))
    for n in range(3):
        b.publish(Tick(n=n))
    assert b.stats()["publish_pending"] == 2
    assert b.stats()["publish_failures"] == 1

    async def scenario() -> None:
        async with started(b), b.subscribe() as events:
            async with b.subscribe(since=events.last_event_id):
                pass
            assert numbers(await take(events, 2)) == [0, 1]

    run(scenario())


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("http://127.0.0.1/0",), {}, "cannot use"),
        (("redis://127.0.0.1/0",), {"stream": ""}, "stream"),
        (("redis://127.0.0.1/0",), {"history": -1}, "history"),
        (("redis://127.0.0.1/0",), {"timeout": 0}, "timeout"),
        (("redis://127.0.0.1/0",), {"reconnect_delay": 2, "reconnect_max_delay": 1}, "reconnect"),
        (("redis://127.0.0.1/0",), {"max_pending": 0}, "max_pending"),
        ((AsyncRedis(),), {"socket_timeout": 1}, "with a URL"),
    ],
)
def test_impossible_settings_are_configuration_errors(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    """Each bad argument is refused at construction with a message naming it."""
    with pytest.raises(ConfigurationError, match=message):
        RedisBackend(*args, **kwargs)  # type: ignore[arg-type]


def test_publish_outside_the_started_loop_is_unavailable(redis_url: str) -> None:
    """RedisBackend.publish() before start says how to start it."""

    async def scenario() -> None:
        with pytest.raises(BackendUnavailable, match="not started"):
            await RedisBackend(redis_url).publish(Event("test.tick", {"n": 1}))

    run(scenario())


def test_since_is_refused_when_it_cannot_be_vouched_for(redis_server: RedisServer) -> None:
    """resumed=False for an id of another backend, a trimmed epoch start, and while Redis
    is down; resumed=True again once it is back."""

    async def scenario() -> None:
        async with started(Broadcaster(redis_server.url, history=10)) as b:
            async with b.subscribe() as events:
                start = events.last_event_id
            first = await b.apublish(Tick(n=0))
            for n in range(1, 400):
                b.publish(Tick(n=n))
            last = await b.apublish(Tick(n=400))
            for since in ("abcd:5", start):
                async with b.subscribe(since=since) as events:
                    assert events.resumed is False, since
            redis_server.kill()
            async with b.subscribe(since=last.id) as events:
                assert events.resumed is False
            await asyncio.to_thread(redis_server.start)  # empty again: a new epoch
            after = await apublish_retrying(b, 401)
            async with b.subscribe(since=after.id) as events:
                assert events.resumed is True
            assert parse_id(first.id)[0] != parse_id(after.id)[0]

    run(scenario())


def test_a_full_queue_drops_and_refuses_instead_of_growing(redis_url: str) -> None:
    """max_pending bounds the events waiting for Redis: publish() counts, apublish() raises."""

    async def scenario() -> None:
        async with started(Broadcaster(RedisBackend(redis_url, max_pending=2))) as b:
            async with b.subscribe() as live:
                for n in range(5):  # all queued before the writer runs
                    b.publish(Tick(n=n))
                assert b.stats()["publish_failures"] == 3
                with pytest.raises(BackendUnavailable, match="already wait"):
                    await b.apublish(Tick(n=5))
                assert numbers(await take(live, 2)) == [0, 1]

    run(scenario())


def test_a_stalled_redis_never_blocks_the_loop(redis_url: str) -> None:
    """Redis stops answering (CLIENT PAUSE): apublish() raises after the timeout, close()
    returns, queued events are counted, and the event loop keeps turning throughout."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        gaps: list[float] = []

        async def tick() -> None:
            while True:
                before = loop.time()
                await asyncio.sleep(0.01)
                gaps.append(loop.time() - before)

        b = Broadcaster(RedisBackend(redis_url, timeout=0.5))
        ticker = asyncio.ensure_future(tick())
        try:
            await b.start()
            with redis.Redis.from_url(redis_url) as client:
                client.execute_command("CLIENT", "PAUSE", 2500, "ALL")
            began = loop.time()
            with pytest.raises(BackendUnavailable):
                await b.apublish(Tick(n=1))
            assert loop.time() - began < 2
            b.publish(Tick(n=2))
            b.publish(Tick(n=3))
            began = loop.time()
            await b.close()
            assert loop.time() - began < 2
            assert b.stats()["publish_failures"] == 2
        finally:
            ticker.cancel()
            await b.close()
            with redis.Redis.from_url(redis_url) as client:
                client.execute_command("CLIENT", "UNPAUSE")
        assert max(gaps) < 0.25

    run(scenario())
