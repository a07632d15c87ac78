"""The PostgreSQL backend's parts one at a time: the row codec (the trust boundary), the
settings it refuses, and events published before the backend starts."""

from __future__ import annotations

import psycopg
import pytest

from livepanel import Broadcaster, ConfigurationError, Event
from livepanel.backends.postgres import MAX_ROW_SIZE, PostgresBackend, RejectedRow
from livepanel.backends.postgres.codec import control_of, decode_row, encode_event
from livepanel.backends.postgres.settings import PostgresSettings
from tests.redis.redis_helpers import Tick, numbers, run, started, take


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not a livepanel event"),
        ('{"type": "welcome", "timestamp": "2026-02-21T10:00:00.000Z", "payload": {}}',
         "reserved type: welcome"),
        ('{"type": "nobody.knows", "timestamp": "2026-02-21T10:00:00.000Z", "payload": {}}',
         "unregistered event type"),
        ('{"type": "test.tick", "timestamp": "2026-02-21T10:00:00.000Z", "payload": {"n": "x"}}',
         "invalid payload for test.tick"),
        ("x" * (MAX_ROW_SIZE + 1), "larger than"),
    ],
)  # fmt: skip
def test_a_row_that_is_not_a_valid_event_is_rejected_without_quoting_it(
    body: str, reason: str
) -> None:
    """Anything that can insert a row could forge frames: such rows are refused, and the
    reason names no value of the row."""
    with pytest.raises(RejectedRow) as rejected:
        decode_row(body, "e1", 3)
    assert rejected.value.reason.startswith(reason)
    assert '"x"' not in rejected.value.reason


def test_an_event_survives_the_row_with_its_audience() -> None:
    """What the writer stores is what the reader gets back, audience included."""
    event = Event("test.tick", {"n": 4}, audience=frozenset({"team:ops"}))
    back = decode_row(encode_event(event), "e1", 9)
    assert (back.id, back.payload, back.audience) == ("e1:9", {"n": 4}, frozenset({"team:ops"}))
    assert control_of("[1, 2]") == {}
    assert control_of("{broken") == {}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"table": "Events"}, "table="),
        ({"schema": "a-b"}, "schema="),
        ({"history": 0}, "history"),
        ({"timeout": 0}, "timeout"),
        ({"max_age": -1}, "max_age"),
        ({"max_pending": 0}, "max_pending"),
        ({"state_limit": True}, "state_limit"),
    ],
)
def test_an_impossible_setting_is_named(options: dict[str, object], named: str) -> None:
    """Each bad setting is refused at construction, by name."""
    with pytest.raises(ConfigurationError, match=named):
        PostgresSettings.check("postgresql://db/app", **options)  # type: ignore[arg-type]


def test_a_number_in_the_url_that_is_no_number_is_named() -> None:
    with pytest.raises(ConfigurationError, match="poll_interval"):
        PostgresBackend.from_url("postgresql://db/app?poll_interval=soon")


@pytest.mark.postgres
def test_events_published_before_start_are_written_at_start(postgres_url: str) -> None:
    """publish() before the backend runs: held in this process, written once it starts,
    delivered live in order; a sync connection in autocommit is refused for a transaction."""

    async def scenario() -> None:
        broadcaster = Broadcaster(PostgresBackend.from_url(postgres_url))
        pg = broadcaster.backend
        assert isinstance(pg, PostgresBackend)
        pg.publish_nowait(Event("test.tick", {"n": 0}))
        pg.publish_nowait(Event("test.tick", {"n": 1}))
        async with started(broadcaster), broadcaster.subscribe(["test.*"], since=None) as live:
            await broadcaster.apublish(Tick(n=2))
            assert numbers(await take(live, 3)) == [0, 1, 2]  # held ones go after the head
            replayed = await pg.replay(f"{pg.epoch}:0")
            assert replayed is not None
            assert numbers(replayed) == [0, 1, 2]
            with psycopg.connect(postgres_url.partition("?")[0], autocommit=True) as conn:
                with pytest.raises(ConfigurationError, match="autocommit"):
                    broadcaster.publish(Tick(n=3), transaction=conn)
            assert pg.stats()["publish_pending"] == 0
            assert "PostgresBackend(" in repr(pg)

    run(scenario())
