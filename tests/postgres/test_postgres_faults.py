"""Faults on private PostgreSQL clusters the tests kill and promote: a crash and restart
loses and repeats nothing, and a failover to a replica that lacks the newest rows starts a
new epoch instead of a silent gap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from livepanel import Broadcaster
from livepanel.backends.postgres import PostgresBackend
from livepanel.protocol import parse_id
from tests.postgres.pg_helpers import Cluster
from tests.redis.redis_helpers import (
    Tick,
    apublish_retrying,
    nothing_more,
    numbers,
    run,
    started,
    take,
    wait_for,
)

pytestmark = pytest.mark.postgres


def test_a_database_crash_and_restart_loses_and_repeats_nothing(
    start_postgres: Callable[..., Cluster],
) -> None:
    """SIGKILL the server, start it again (crash recovery): every connection comes back, the
    reader continues after the last row it saw, and a since from before the crash resumes."""
    cluster = start_postgres()

    async def scenario() -> None:
        pg = PostgresBackend(cluster.url, poll_interval=0.3, reconnect_delay=0.05, timeout=2)
        async with started(Broadcaster(pg)) as broadcaster:
            async with broadcaster.subscribe(["test.*"]) as live:
                first = [await broadcaster.apublish(Tick(n=n)) for n in range(5)]
                assert numbers(await take(live, 5)) == list(range(5))
                cluster.kill()
                with pytest.raises(Exception):  # noqa: B017 - BackendUnavailable, any wording
                    await broadcaster.apublish(Tick(n=99))
                cluster.start()
                for n in range(5, 10):
                    await apublish_retrying(broadcaster, n, timeout=20)
                assert numbers(await take(live, 5, timeout=20)) == list(range(5, 10))
                assert await nothing_more(live, 0.8)
            assert broadcaster.stats()["reader_reconnects"] >= 1
            async with broadcaster.subscribe(["test.*"], since=first[1].id) as resumed:
                assert resumed.resumed
                assert numbers(await take(resumed, 8)) == list(range(2, 10))

    run(scenario(), timeout=90)


def test_a_failover_to_a_replica_that_lacks_the_newest_rows_starts_a_new_epoch(
    start_postgres: Callable[..., Cluster],
) -> None:
    """The replica stops receiving WAL, five more events commit on the primary, the primary
    dies and the replica is promoted (libpq finds it among the URL's hosts): the reader sees
    its last row gone and begins a new epoch; a since from the lost history is refused."""
    primary = start_postgres()
    replica = start_postgres(primary=primary)
    hosts = f"127.0.0.1:{primary.port},127.0.0.1:{replica.port}"
    url = f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def replayed_everything() -> bool:
        with psycopg.connect(primary.url) as p, psycopg.connect(replica.url) as r:
            lsn: Any = p.execute("SELECT pg_current_wal_lsn()").fetchone()
            done: Any = r.execute("SELECT pg_last_wal_replay_lsn() >= %s", (lsn[0],)).fetchone()
            return bool(done[0])

    async def scenario() -> None:
        pg = PostgresBackend(url, poll_interval=0.3, reconnect_delay=0.05, timeout=2)
        async with started(Broadcaster(pg)) as broadcaster:
            async with broadcaster.subscribe(["test.*"]) as live:
                kept = [await broadcaster.apublish(Tick(n=n)) for n in range(5)]
                assert numbers(await take(live, 5)) == list(range(5))
                wait_for(replayed_everything, "the replica to replay the first five")
                with psycopg.connect(replica.url, autocommit=True) as r:
                    r.execute("ALTER SYSTEM SET primary_conninfo = ''")
                    r.execute("SELECT pg_reload_conf()")
                await asyncio.sleep(0.5)  # the WAL receiver stops
                lost = [await broadcaster.apublish(Tick(n=n)) for n in range(5, 10)]
                assert numbers(await take(live, 5)) == list(range(5, 10))
                primary.kill()
                replica.promote()
                after = await apublish_retrying(broadcaster, 10, timeout=30)
                (received,) = await take(live, 1, timeout=20)
                assert numbers([received]) == [10]
                old_epoch = parse_id(lost[-1].id or "")[0]
                assert parse_id(received.id or "")[0] != old_epoch
                assert parse_id(after.id or "")[0] != old_epoch
                assert await pg.replay(lost[-1].id or "") is None
                assert await pg.replay(kept[-1].id or "") is None  # another epoch now
                assert await pg.replay(received.id or "") == []

    run(scenario(), timeout=120)
