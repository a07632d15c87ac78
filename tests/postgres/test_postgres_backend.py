"""The PostgreSQL backend on a real server: transactional publish, ids in commit order
whatever order transactions commit in, retention, a missed NOTIFY, a commit holding the
stream, and a role with only the documented privileges."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from livepanel import BackendUnavailable, Broadcaster, ConfigurationError, Event, MemoryBackend
from livepanel.backends import backend_from_url, transactional_publish_of
from livepanel.backends.postgres import PostgresBackend
from livepanel.metrics import instrument
from livepanel.protocol import parse_id
from tests.redis.redis_helpers import Tick, nothing_more, numbers, run, started, take

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).parents[2]


def backend(url: str, **options: object) -> PostgresBackend:
    options.setdefault("poll_interval", 0.5)
    options.setdefault("reconnect_delay", 0.05)
    return PostgresBackend.from_url(url, **options)  # type: ignore[arg-type]


def documented_grants() -> list[str]:
    """The GRANT statements of docs/postgres.md, as ``psql -c`` runs them."""
    page = (ROOT / "docs" / "postgres.md").read_text()
    lines = [shlex.split(line) for line in page.splitlines() if line.startswith("psql -d app")]
    return [words[words.index("-c") + 1] for words in lines]


def positions(events: list[Event]) -> list[int]:
    return [parse_id(e.id or "")[1][0] for e in events]


# ---------------------------------------------------------------------- URLs


def test_a_postgresql_url_builds_the_postgres_backend(postgres_url: str) -> None:
    """LIVEPANEL_BACKEND_URL=postgresql://...: the PostgreSQL backend, libpq's options kept,
    livepanel's taken, the password never shown."""
    made = backend_from_url("postgresql://app:s3cret@db:5432/app?table=panel&sslmode=require")
    assert isinstance(made, PostgresBackend)
    assert made.names.events == "panel"
    assert "sslmode=require" in made.settings.conninfo
    assert "s3cret" not in made.describe()
    assert "s3cret" not in repr(made)
    assert isinstance(Broadcaster("postgres://db/app").backend, PostgresBackend)
    with pytest.raises(ConfigurationError, match="lowercase identifier"):
        backend_from_url("postgresql://db/app?table=Robert';DROP")


# ---------------------------------------------------------------------- transactional publish


def test_a_committed_transaction_delivers_its_event_once(postgres_url: str) -> None:
    """apublish(transaction=conn): nothing before the commit, exactly once after it, with an
    id that replays like any other."""

    async def scenario() -> None:
        async with started(Broadcaster(backend(postgres_url))) as broadcaster:
            async with broadcaster.subscribe(["test.*"]) as live:
                conn = await psycopg.AsyncConnection.connect(postgres_url.partition("?")[0])
                async with conn:
                    async with conn.transaction():
                        written = await broadcaster.apublish(Tick(n=1), transaction=conn)
                        assert written.id is None  # given at commit
                        assert await nothing_more(live, 0.6)  # not before the commit
                    (received,) = await take(live, 1)
                assert numbers([received]) == [1]
                assert await nothing_more(live, 0.6)
                before = await broadcaster.apublish(Tick(n=0))
                after = await broadcaster.backend.replay(before.id or "")
                assert after == []
                replayed = await broadcaster.backend.replay(f"{parse_id(received.id or '')[0]}:0")
                assert replayed is not None
                assert received.id in [e.id for e in replayed]

    run(scenario())


def test_a_rolled_back_transaction_delivers_nothing(postgres_url: str) -> None:
    """Rolled back (by an exception in the block): no dashboard ever sees the event, and the
    stream goes on without a gap a client could notice."""

    async def scenario() -> None:
        async with started(Broadcaster(backend(postgres_url))) as broadcaster:
            async with broadcaster.subscribe(["test.*"]) as live:
                conn = await psycopg.AsyncConnection.connect(postgres_url.partition("?")[0])

                async def failing_write() -> None:
                    async with conn.transaction():
                        await broadcaster.apublish(Tick(n=1), transaction=conn)
                        raise RuntimeError("the business write failed")

                async with conn:
                    with pytest.raises(RuntimeError):
                        await failing_write()
                first = await broadcaster.apublish(Tick(n=2))
                assert numbers(await take(live, 1)) == [2]
                assert await nothing_more(live, 0.6)
            async with broadcaster.subscribe(["test.*"], since=first.id) as resumed:
                assert resumed.resumed

    run(scenario())


def test_transactional_publish_needs_an_open_transaction_and_a_backend_that_can(
    postgres_url: str,
) -> None:
    """A connection in autocommit, a sync connection given to apublish, or a backend without
    the capability: a ConfigurationError that says what to do."""

    async def scenario() -> None:
        async with started(Broadcaster(backend(postgres_url))) as broadcaster:
            dsn = postgres_url.partition("?")[0]
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                with pytest.raises(ConfigurationError, match="transaction open"):
                    await broadcaster.apublish(Tick(n=1), transaction=conn)
            with psycopg.connect(dsn) as sync_conn:
                with pytest.raises(ConfigurationError, match="AsyncConnection"):
                    await broadcaster.apublish(Tick(n=1), transaction=sync_conn)
        memory = Broadcaster(MemoryBackend())
        with pytest.raises(ConfigurationError, match="cannot publish in a database transaction"):
            await memory.apublish(Tick(n=1), transaction=object())
        assert transactional_publish_of(memory.backend) is None

    run(scenario())


def test_an_event_committed_by_a_process_killed_right_after_is_delivered(
    postgres_url: str, tmp_path: Path
) -> None:
    """The publishing process commits and is SIGKILLed at once (no flush, no callback): the
    event is in the database, so it reaches the dashboards anyway."""
    script = tmp_path / "publisher.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, sys, psycopg
            from livepanel import Broadcaster
            from tests.redis.redis_helpers import Tick
            broadcaster = Broadcaster(sys.argv[1])
            with psycopg.connect(sys.argv[1].partition("?")[0]) as conn:
                with conn.transaction():
                    conn.execute("SELECT 1")
                    broadcaster.publish(Tick(n=7), transaction=conn)
                os.kill(os.getpid(), signal.SIGKILL)  # right after the commit
            """
        )
    )

    async def scenario() -> None:
        async with started(Broadcaster(backend(postgres_url))) as broadcaster:
            async with broadcaster.subscribe(["test.*"]) as live:
                env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
                process = await asyncio.create_subprocess_exec(
                    sys.executable, str(script), postgres_url, env=env, cwd=ROOT
                )
                assert await process.wait() == -signal.SIGKILL
                assert numbers(await take(live, 1, timeout=10)) == [7]

    run(scenario())


# ---------------------------------------------------------------------- commit order


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_out_of_order_commits_are_delivered_once_in_the_streams_order(
    postgres_url: str, data: st.DataObject
) -> None:
    """Transactions insert in one random order and commit (or roll back) in another, some at
    once: every dashboard gets every committed event exactly once, in the order a replay
    from any id gives, and a transaction committed after another comes after it."""
    count = data.draw(st.integers(2, 6), label="transactions")
    insert_order = data.draw(st.permutations(range(count)), label="insert order")
    commit_order = data.draw(st.permutations(range(count)), label="commit order")
    rolled_back = data.draw(st.sets(st.integers(0, count - 1), max_size=count - 1), label="roll")
    together = data.draw(st.booleans(), label="commit concurrently")
    dsn = postgres_url.partition("?")[0]

    async def scenario() -> None:
        async with started(Broadcaster(backend(postgres_url))) as broadcaster:
            head = broadcaster.last_event_id
            async with broadcaster.subscribe(["test.*"]) as live:
                conns = [await psycopg.AsyncConnection.connect(dsn) for _ in range(count)]
                try:
                    for i in insert_order:
                        for k in range(2):  # two events per transaction
                            await broadcaster.apublish(Tick(n=i * 10 + k), transaction=conns[i])

                    async def finish(i: int) -> None:
                        await (conns[i].rollback() if i in rolled_back else conns[i].commit())

                    if together:
                        await asyncio.gather(*(finish(i) for i in commit_order))
                    else:
                        for i in commit_order:
                            await finish(i)
                finally:
                    for conn in conns:
                        await conn.close()
                committed = [i for i in commit_order if i not in rolled_back]
                received = await take(live, 2 * len(committed), timeout=10)
                assert await nothing_more(live, 0.3)
                got = numbers(received)
                assert sorted(got) == sorted(i * 10 + k for i in committed for k in range(2))
                assert positions(received) == sorted(set(positions(received)))
                if not together:  # committed one after the other: in that order, each whole
                    assert got == [i * 10 + k for i in committed for k in range(2)]
                replayed = await broadcaster.backend.replay(head)
                assert replayed is not None
                assert [e.id for e in replayed] == [e.id for e in received]
                for at, event in enumerate(received):
                    rest = await broadcaster.backend.replay(event.id or "")
                    assert [e.id for e in rest or []] == [e.id for e in received[at + 1 :]]

    run(scenario())


def test_a_notify_that_never_comes_is_caught_up_by_polling(postgres_url: str) -> None:
    """A row committed without a NOTIFY (lost by a proxy, or sent while the reader was away)
    still arrives, within the poll interval, in order."""

    async def scenario() -> None:
        pg = backend(postgres_url, poll_interval=0.3)
        async with started(Broadcaster(pg)) as broadcaster:
            async with broadcaster.subscribe(["test.*"]) as live:
                names = pg.names
                body = Event("test.tick", {"n": 5}).to_json()
                async with await psycopg.AsyncConnection.connect(
                    postgres_url.partition("?")[0]
                ) as conn:
                    async with conn.transaction():  # what the writer does, minus the NOTIFY
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (names.stream_lock,))
                        await conn.execute(
                            sql.SQL(
                                "INSERT INTO {} (position, committed_at, body) VALUES "
                                "(nextval(%s), clock_timestamp(), %s)"
                            ).format(pg.table()),
                            (f"{names.schema}.{names.sequence}", body),
                        )
                started_at = time.monotonic()
                assert numbers(await take(live, 1, timeout=5)) == [5]
                assert time.monotonic() - started_at < 2.0
                await broadcaster.apublish(Tick(n=6))
                assert numbers(await take(live, 1)) == [6]

    run(scenario())


# ---------------------------------------------------------------------- retention and state


def test_retention_keeps_history_rows_and_the_state_of_everything(postgres_url: str) -> None:
    """Beyond history the oldest rows go, without blocking publishers; a resume from a trimmed
    id is refused, from a kept one granted; the state still holds what the trimmed events
    made (folded into the stored state), also for a process that starts afterwards."""

    async def scenario() -> None:
        pg = backend(postgres_url, history=10)
        async with started(Broadcaster(pg)) as broadcaster:
            first = await broadcaster.apublish(
                "session.created", {"sessionKey": "s0", "agentId": "a", "kind": "direct"}
            )
            stored = [await broadcaster.apublish(Tick(n=n)) for n in range(40)]
            deadline = time.monotonic() + 10
            while await pg.replay(first.id or "") is not None:
                assert time.monotonic() < deadline, "retention did not run"
                await asyncio.sleep(0.1)
            kept = await pg.replay(stored[-5].id or "")
            assert kept is not None
            assert numbers(kept) == [36, 37, 38, 39]
            state = await broadcaster.state()
            assert [e["id"] for e in state["collections"]["sessions"]["entries"]] == [first.id]
        async with started(Broadcaster(backend(postgres_url, history=10))) as later:
            state = await later.state()
            assert [e["id"] for e in state["collections"]["sessions"]["entries"]] == [first.id]
            assert state["lastEventId"] == stored[-1].id

    run(scenario())


def test_retention_by_age_trims_old_rows_within_history(postgres_url: str) -> None:
    """max_age: rows older than it go even though history has room (the newest stays)."""

    async def scenario() -> None:
        pg = backend(postgres_url, history=1000, max_age=0.5)
        async with started(Broadcaster(pg)) as broadcaster:
            old = [await broadcaster.apublish(Tick(n=n)) for n in range(5)]
            await asyncio.sleep(0.7)
            new = await broadcaster.apublish(Tick(n=5))
            deadline = time.monotonic() + 10
            while await pg.replay(old[0].id or "") is not None:
                assert time.monotonic() < deadline, "retention by age did not run"
                await asyncio.sleep(0.1)
            assert await pg.replay(new.id or "") == []

    run(scenario())


# ---------------------------------------------------------------------- a commit holding the stream


def test_a_commit_holding_the_stream_is_lag_in_health_not_a_hang(postgres_url: str) -> None:
    """A transaction that took the stream lock and does not finish (SET CONSTRAINTS ALL
    IMMEDIATE, then a long wait): apublish fails in bounded time (publish drops and counts),
    health and the metrics report the lag and, past stall_after, health is not ok; once it
    commits, all flows again."""

    async def scenario() -> None:
        pg = backend(postgres_url, timeout=1.0)
        dsn = postgres_url.partition("?")[0]
        holder = await psycopg.AsyncConnection.connect(dsn)
        broadcaster = Broadcaster(pg)
        registry = CollectorRegistry()
        instrument(broadcaster, registry=registry)
        try:
            async with started(broadcaster):
                async with broadcaster.subscribe(["test.*"]) as live:
                    await broadcaster.apublish(Tick(n=1), transaction=holder)
                    await holder.execute("SET CONSTRAINTS ALL IMMEDIATE")  # takes the lock now
                    broadcaster.publish(Tick(n=2))  # waits behind it, then is dropped
                    started_at = time.monotonic()
                    with pytest.raises(BackendUnavailable):
                        await broadcaster.apublish(Tick(n=3))
                    assert time.monotonic() - started_at < 5
                    assert broadcaster.stats()["publish_failures"] >= 1
                    report = await broadcaster.health(stall_after=0.5)
                    assert report["readerLagSeconds"] is not None
                    assert report["readerLagSeconds"] > 0.5
                    assert report["backend"] == "stalled"
                    assert not report["ok"]
                    scraped = await asyncio.to_thread(generate_latest, registry)  # off the loop
                    lag = next(
                        sample.value
                        for family in text_string_to_metric_families(scraped.decode())
                        for sample in family.samples
                        if sample.name == "livepanel_backend_lag_seconds"
                    )
                    assert lag > 0.5
                    await holder.commit()
                    await broadcaster.apublish(Tick(n=4))
                    assert numbers(await take(live, 2, timeout=10)) == [1, 4]
                    report = await broadcaster.health()
                    assert report["ok"], report
        finally:
            await holder.close()

    run(scenario())


# ---------------------------------------------------------------------- privileges


def test_a_role_with_only_the_documented_grants_runs_everything(postgres_url: str) -> None:
    """Tables created once by an owner; a role with just the GRANTs of docs/postgres.md
    publishes, reads, replays, claims, counts presence and publishes in its transactions;
    without the tables it is told to have them created, not a traceback."""
    dsn = postgres_url.partition("?")[0]
    role = f"lp_{uuid.uuid4().hex[:10]}"
    schema = dict(part.split("=") for part in postgres_url.partition("?")[2].split("&"))["schema"]

    async def scenario() -> None:
        owner = backend(postgres_url)
        async with started(Broadcaster(owner)):
            pass  # creates the tables
        documented = PostgresBackend("postgresql://db/app").grants("livepanel")
        assert documented_grants() == documented  # the page shows what grants() says
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'CREATE ROLE "{role}" LOGIN')
            for statement in owner.grants(role):
                admin.execute(statement)
        try:
            url = f"postgresql://{role}@127.0.0.1:5432/test?schema={schema}"
            async with started(Broadcaster(backend(url))) as broadcaster:
                async with broadcaster.subscribe(["test.*"]) as live:
                    first = await broadcaster.apublish(Tick(n=1))
                    async with await psycopg.AsyncConnection.connect(url.partition("?")[0]) as c:
                        async with c.transaction():
                            await broadcaster.apublish(Tick(n=2), transaction=c)
                    assert numbers(await take(live, 2)) == [1, 2]
                assert numbers(await broadcaster.backend.replay(first.id or "") or []) == [2]
                pg = broadcaster.backend
                assert isinstance(pg, PostgresBackend)
                assert await pg.claim_once("t:1", 5)
                assert not await pg.claim_once("t:1", 5)
                await pg.write_presence("w", {"alice": 1}, 5)
                assert await pg.read_presence() == {"alice": 1}
                await broadcaster.disconnect(user="nobody")
            missing = f"postgresql://{role}@127.0.0.1:5432/test?schema={schema}&table=other"
            with pytest.raises(ConfigurationError, match="may not create them"):
                await Broadcaster(backend(missing)).start()
        finally:
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(f'DROP OWNED BY "{role}"')
                admin.execute(f'DROP ROLE "{role}"')

    run(scenario())
