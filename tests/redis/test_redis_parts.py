"""The Redis backend's writer and reader, each alone: their named states and transitions."""

from __future__ import annotations

import asyncio

import pytest

from livepanel.backends.redis.connect import parse_target
from livepanel.backends.redis.link import Link
from livepanel.backends.redis.reader import Reader, ReaderState
from livepanel.backends.redis.settings import RedisSettings
from livepanel.backends.redis.writer import Writer, WriterState
from livepanel.errors import BackendUnavailable
from livepanel.events import Event
from tests.redis.redis_helpers import free_port, run, wait_until


def parts(url: str) -> tuple[RedisSettings, Link]:
    target = parse_target(url)
    settings = RedisSettings.check(
        topology=target.topology,
        location=target.location,
        timeout=0.5,
        reconnect_delay=0.05,
        reconnect_max_delay=0.2,
    )
    link = Link(target, None, timeout=0.5, location=target.location, topology=target.topology)
    return settings, link


def tick(n: int) -> Event:
    return Event("test.tick", {"n": n})


@pytest.mark.redis
def test_a_writer_moves_from_stopped_to_idle_through_writing(redis_url: str) -> None:
    """Held while STOPPED; begin() writes the held event (WRITING) and comes to rest IDLE."""

    async def scenario() -> None:
        settings, link = parts(redis_url)
        writer = Writer(settings, link)
        seen: list[WriterState] = []
        writer.publish_nowait(tick(1))
        assert (writer.state, writer.pending) == (WriterState.STOPPED, 1)
        original = writer._enter

        def recording(state: WriterState) -> None:
            seen.append(state)
            original(state)

        writer._enter = recording  # type: ignore[method-assign]
        writer.begin(asyncio.get_running_loop())
        stored = await writer.publish(tick(2))
        await wait_until(lambda: writer.state is WriterState.IDLE, what="an idle writer")
        assert stored.id is not None
        assert writer.written is not None
        await writer.stop(timeout=1.0)
        await link.close()
        assert seen[0] is WriterState.IDLE
        assert WriterState.WRITING in seen
        assert seen[-1] is WriterState.STOPPED
        assert writer.pending == 0

    run(scenario())


def test_a_writer_that_cannot_reach_redis_backs_off_and_counts_what_it_drops() -> None:
    """A failed batch: BACKING_OFF, the events counted as dropped; an apublish() fails with
    BackendUnavailable; stop() ends in STOPPED."""

    async def scenario() -> None:
        settings, link = parts(f"redis://127.0.0.1:{free_port()}/0")
        writer = Writer(settings, link)
        writer.begin(asyncio.get_running_loop())
        writer.publish_nowait(tick(1))
        await wait_until(lambda: writer.state is WriterState.BACKING_OFF, what="a backoff")
        assert writer.publish_failures == 1
        with pytest.raises(BackendUnavailable, match="cannot take the event"):
            await writer.publish(tick(2))
        await writer.stop(timeout=0.2)
        await link.close()
        assert writer.state is WriterState.STOPPED

    run(scenario())


def test_the_writer_refuses_a_transition_it_does_not_know() -> None:
    """STOPPED -> WRITING is not a transition: a writer never writes without a task."""
    settings, link = parts("redis://127.0.0.1:1/0")
    writer = Writer(settings, link)
    with pytest.raises(AssertionError, match="stopped -> writing"):
        writer._enter(WriterState.WRITING)


def test_a_reader_that_loses_redis_is_reconnecting_then_stops() -> None:
    """READING from begin(); RECONNECTING once a read fails; STOPPED after stop()."""

    async def scenario() -> None:
        settings, link = parts(f"redis://127.0.0.1:{free_port()}/0")
        reader = Reader(settings, link)
        assert reader.state is ReaderState.STOPPED
        reader.begin(asyncio.get_running_loop(), lambda events: None, None, "e1", "0-0")
        assert reader.state is ReaderState.READING
        await wait_until(lambda: reader.state is ReaderState.RECONNECTING, what="a reconnect")
        status = await reader.status(timeout=0.2)
        assert (status["reachable"], status["running"]) == (False, True)
        await reader.stop()
        await link.close()
        assert reader.state is ReaderState.STOPPED
        assert not reader.running

    run(scenario())


@pytest.mark.redis
def test_a_reader_delivers_what_the_writer_wrote_and_moves_its_position(redis_url: str) -> None:
    """Writer and reader on one stream: the reader delivers in order and stands at the
    writer's newest entry."""

    async def scenario() -> None:
        settings, link = parts(redis_url)
        writer, reader = Writer(settings, link), Reader(settings, link)
        delivered: list[Event] = []
        loop = asyncio.get_running_loop()
        state = await link.scripts().stream_state(settings.keys, "0-0")
        writer.begin(loop)
        reader.begin(loop, delivered.extend, None, state.epoch, state.newest or "0-0")
        for n in range(3):
            await writer.publish(tick(n))
        await wait_until(lambda: len(delivered) == 3, what="three deliveries")
        assert [e.payload["n"] for e in delivered] == [0, 1, 2]
        assert writer.written is not None
        assert reader.position == writer.written[1]
        await reader.stop()
        await writer.stop(timeout=1.0)
        await link.close()

    run(scenario())
