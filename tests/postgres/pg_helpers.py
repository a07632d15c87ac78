"""Shared by the PostgreSQL tests: the shared server on 5432 with a schema of each test's own,
and private clusters on free ports that a test may kill, restart or fail over."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.redis.redis_helpers import free_port
from tests.requirements import unavailable

SHARED = "postgresql://postgres@127.0.0.1:5432/test"
"""The machine's PostgreSQL (trust auth): each test works in a schema of its own there."""


def postgres_binary(name: str) -> str:
    """A PostgreSQL server program (``initdb``, ``pg_ctl``, ``postgres``, ``pg_basebackup``):
    skips without it, fails under LIVEPANEL_REQUIRE_POSTGRES=1."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path is None:
        unavailable("postgres", f"{name} is not installed (apt-get install postgresql)")
    return on_path


def shared_server() -> str:
    """The shared server's URL; skips (or fails) when it does not answer."""
    try:
        with psycopg.connect(SHARED, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        unavailable("postgres", f"no PostgreSQL on 127.0.0.1:5432 ({exc}); make services")
    return SHARED


@contextlib.contextmanager
def private_schema(url: str) -> Iterator[str]:
    """A fresh schema name (created by the backend), dropped at the end with what it holds."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def with_query(url: str, **query: object) -> str:
    """``url`` with livepanel's settings added to its query."""
    tail = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{url}{'&' if '?' in url else '?'}{tail}"


def _as_server_user() -> dict[str, object]:
    """PostgreSQL refuses to run as root: run its programs as ``postgres`` then."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


class Cluster:
    """A private PostgreSQL cluster in a temporary directory, on a free port, that a test can
    kill (SIGKILL: a crash), start again, or copy to a streaming replica and promote."""

    def __init__(self, *, primary: Cluster | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="livepanel-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        if primary is None:
            command = [postgres_binary("initdb"), "-D", str(self.data), "-U", "postgres",
                       "--auth=trust", "--no-sync", "-E", "UTF8"]  # fmt: skip
        else:
            command = [postgres_binary("pg_basebackup"), "-D", str(self.data), "-h",
                       "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-R",
                       "-X", "stream", "--no-sync"]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=120, **_as_server_user())

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server; return once it accepts connections."""
        args = [
            postgres_binary("postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.directory}",
            "-c", "fsync=off", "-c", "max_connections=60", "-c", "wal_level=replica",
            "-c", "max_wal_senders=4", "-c", "hot_standby=on",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, **_as_server_user()
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited on start-up:\n{self.log.read_text()[-2000:]}")
            if self.answers():
                return
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"postgres did not start on port {self.port}")

    def answers(self) -> bool:
        with (
            contextlib.suppress(psycopg.OperationalError),
            psycopg.connect(self.url, connect_timeout=1) as conn,
        ):
            conn.execute("SELECT 1")
            return True
        return False

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; its backends exit once they notice."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self._backends_alive():
                time.sleep(0.05)
        self.process = None

    def _backends_alive(self) -> bool:
        found = subprocess.run(
            ["pgrep", "-f", f"-D {self.data}"], capture_output=True, text=True, check=False
        )
        return bool(found.stdout.strip())

    def restart(self) -> None:
        """Kill the server and start it again on the same port and data (crash recovery)."""
        self.kill()
        self.start()

    def promote(self) -> None:
        """Promote this replica to a primary, and wait until it takes writes."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT pg_promote(true, 30)")

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
