"""The transactional-publish recipes of docs/postgres.md, run as written: psycopg,
SQLAlchemy's async session, and Django (in a process of its own, configured on PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from examples.postgres.recipes import create_session, kill_session
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from livepanel import Broadcaster
from livepanel.backends.postgres import PostgresBackend
from tests.redis.redis_helpers import nothing_more, run, started, take

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).parents[2]


def parts(url: str) -> tuple[str, str]:
    """The URL without livepanel's query, and the test's schema."""
    dsn, _, query = url.partition("?")
    return dsn, dict(p.split("=") for p in query.split("&"))["schema"]


async def make_sessions_table(dsn: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            f'CREATE TABLE "{schema}".sessions (key text PRIMARY KEY, killed boolean DEFAULT false)'
        )


def test_the_psycopg_and_sqlalchemy_recipes_deliver_on_commit_only(postgres_url: str) -> None:
    """create_session through SQLAlchemy's async session and kill_session through psycopg:
    each event arrives once its transaction commits; a failing one delivers nothing."""
    dsn, schema = parts(postgres_url)

    async def scenario() -> None:
        pg = PostgresBackend.from_url(postgres_url, poll_interval=0.5)
        async with started(Broadcaster(pg)) as broadcaster:
            await make_sessions_table(dsn, schema)
            engine = create_async_engine(
                dsn.replace("postgresql://", "postgresql+psycopg://"),
                connect_args={"options": f"-c search_path={schema}"},
            )
            sessions = async_sessionmaker(engine)
            try:
                async with broadcaster.subscribe(["session.*"]) as live:
                    async with sessions() as session:
                        await create_session(broadcaster, session, "s1")
                    (created,) = await take(live, 1)
                    assert (created.type, created.payload["sessionKey"]) == (
                        "session.created",
                        "s1",
                    )
                    async with sessions() as session:
                        with pytest.raises(Exception, match="duplicate key"):
                            await create_session(broadcaster, session, "s1")  # rolled back
                    conn = await psycopg.AsyncConnection.connect(
                        dsn, options=f"-c search_path={schema}"
                    )
                    async with conn:
                        await kill_session(broadcaster, conn, "s1")
                    (killed,) = await take(live, 1)
                    assert killed.type == "session.killed"
                    assert await nothing_more(live, 0.8)
            finally:
                await engine.dispose()

    run(scenario())


DJANGO_SCRIPT = """
import sys
import django
from django.conf import settings

dsn, schema, url, fail = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "fail"
settings.configure(
    DATABASES={"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": "test", "USER": "postgres",
        "HOST": "127.0.0.1", "PORT": "5432", "OPTIONS": {"options": f"-c search_path={schema}"},
    }},
    INSTALLED_APPS=[],
)
django.setup()
from django.db import transaction
from livepanel import Broadcaster, set_broadcaster
from examples.postgres.django_recipe import kill_session

set_broadcaster(Broadcaster(url))
try:
    with transaction.atomic():
        kill_session(sys.argv[5])
        if fail:
            raise RuntimeError("the view failed after publishing")
except RuntimeError:
    print("rolled back")
else:
    print("committed")
"""


def test_the_django_recipe_delivers_on_commit_only(postgres_url: str, tmp_path: Path) -> None:
    """kill_session in a Django process on PostgreSQL: the event arrives when the view's
    transaction commits, and never when it rolls back after publishing."""
    dsn, schema = parts(postgres_url)
    script = tmp_path / "django_view.py"
    script.write_text(textwrap.dedent(DJANGO_SCRIPT))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}

    async def view(outcome: str, key: str) -> str:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, str(script), dsn, schema, postgres_url, outcome, key),
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0
        return out.decode().strip()

    async def scenario() -> None:
        pg = PostgresBackend.from_url(postgres_url, poll_interval=0.5)
        async with started(Broadcaster(pg)) as broadcaster:
            await make_sessions_table(dsn, schema)
            async with broadcaster.subscribe(["session.*"]) as live:
                assert await view("fail", "s0") == "rolled back"
                assert await nothing_more(live, 0.8)
                assert await view("commit", "s1") == "committed"
                (killed,) = await take(live, 1, timeout=10)
                assert killed.payload["sessionKey"] == "s1"
                assert await nothing_more(live, 0.8)

    run(scenario(), timeout=120)
