"""Shared by the Redis tests and the worker app they start: a private redis-server, an
event type and async helpers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import shlex
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from livepanel import BackendUnavailable, Broadcaster, Event, event_type
from livepanel.broadcaster import Subscription
from tests.ports import free_port as free_port

T = TypeVar("T")


class RedisServer:
    """A redis-server subprocess that can be killed and started again on the same port.

    ``args`` are more configuration directives (``["--replicaof", "127.0.0.1", "6380"]``);
    with ``sentinel=True`` the binary is redis-sentinel and ``args`` are lines of its
    configuration file (``"sentinel monitor mymaster 127.0.0.1 6380 2"``), which Sentinel
    rewrites as it learns.
    """

    def __init__(
        self,
        binary: str,
        directory: Path,
        *,
        appendonly: bool,
        args: Sequence[str] = (),
        sentinel: bool = False,
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.appendonly = appendonly
        self.args = list(args)
        self.sentinel = sentinel
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and return once it answers PING (its data loaded)."""
        common = [
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")),
        ]
        if self.sentinel:
            config = self.directory / "sentinel.conf"
            if not config.exists():
                config.write_text("".join(f"{line}\n" for line in self.args))
            args = [self.binary, str(config), *common]
        else:
            args = [
                *(self.binary, *common, "--save", "", "--appendfsync", "always"),
                *("--appendonly", "yes" if self.appendonly else "no", *self.args),
            ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited on start-up:\n{self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.01)
        self.kill()
        raise TimeoutError(f"redis-server did not answer PING on port {self.port}")

    def ping(self) -> bool:
        """True when the server answers PING with PONG, or asks for a password first (not
        LOADING, not refused)."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn,
        ):
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save, like a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Kill the server and start it again on the same port and directory."""
        self.kill()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        log = self.directory / "redis.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else ""


def documented_acl(password: str) -> list[list[str]]:
    """The ``ACL SETUSER livepanel`` commands of docs/redis-production.md, with ``password``:
    the user's, then the Cluster's additions."""
    page = (Path(__file__).parents[2] / "docs" / "redis-production.md").read_text()
    prefix = "redis-cli ACL SETUSER livepanel "
    commands = [shlex.split(line)[1:] for line in page.splitlines() if line.startswith(prefix)]
    assert len(commands) == 2, "redis-production.md should show two ACL SETUSER lines"
    return [[f">{password}" if w == ">CHANGE-ME" else w for w in words] for words in commands]


def redis_info(port: int, section: str) -> dict[str, str]:
    """``INFO <section>`` of the server on ``port`` as a dict (empty when it does not answer)."""
    with (
        contextlib.suppress(redis.RedisError),
        redis.Redis(port=port, socket_timeout=1, retry=Retry(NoBackoff(), 0)) as r,
    ):
        return {k: str(v) for k, v in r.info(section).items()}
    return {}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``condition`` (blocking) until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class SentinelSet:
    """One primary, one replica and three sentinels (quorum 2) watching them as ``mymaster``,
    with short timeouts: a dead primary is noticed after 400 ms. With ``password`` the
    sentinels require it (of clients and of each other)."""

    SERVICE = "mymaster"

    def __init__(self, start: Callable[..., RedisServer], password: str | None = None) -> None:
        self.password = password
        sync_now = ["--repl-diskless-sync-delay", "0"]  # not the default 5 s
        self.primary = start(args=sync_now)
        self.replica = start(args=[*sync_now, "--replicaof", "127.0.0.1", str(self.primary.port)])
        wait_for(
            lambda: redis_info(self.replica.port, "replication").get("master_link_status") == "up",
            "the replica to sync",
        )
        config = [
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 2",
            f"sentinel down-after-milliseconds {self.SERVICE} 400",
            f"sentinel failover-timeout {self.SERVICE} 4000",
        ]
        if password is not None:
            config += [f"requirepass {password}", f"sentinel sentinel-pass {password}"]
        self.sentinels = [start(sentinel=True, args=config) for _ in range(3)]
        # Redis 7's test knobs: INFO every 200 ms, hello every 500 ms (not 10 s and 2 s); a
        # sentinel turns a replica that says it is a primary back into a replica after four
        # hello periods, so a shorter one undoes a promotion on a loaded machine
        for sentinel in self.sentinels:
            with self._sentinel(sentinel) as r:
                r.execute_command("SENTINEL", "DEBUG", "info-period", 200, "publish-period", 500)
        wait_for(self._ready, "the sentinels to know the replica and each other")

    def _ready(self) -> bool:
        for sentinel in self.sentinels:
            with self._sentinel(sentinel) as r:
                if len(r.sentinel_slaves(self.SERVICE)) != 1:
                    return False
                if len(r.sentinel_sentinels(self.SERVICE)) != 2:
                    return False
        return True

    def url(self, **query: str) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        tail = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0{tail}"

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers sees it."""
        for sentinel in self.sentinels:
            with (
                contextlib.suppress(redis.RedisError),
                self._sentinel(sentinel) as r,
            ):
                address = r.sentinel_get_master_addr_by_name(self.SERVICE)
                return int(address[1]) if address else None
        return None

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote the replica now, as an operator would."""
        with self._sentinel(self.sentinels[0]) as r:
            r.sentinel_failover(self.SERVICE)

    def _sentinel(self, sentinel: RedisServer) -> redis.Redis:
        return redis.Redis(
            port=sentinel.port,
            password=self.password,
            socket_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )


def create_cluster(cli: str, servers: Sequence[RedisServer]) -> None:
    """``redis-cli --cluster create`` over ``servers`` (started with ``--cluster-enabled yes``),
    all primaries; returns once every node reports ``cluster_state:ok``."""
    nodes = [f"127.0.0.1:{server.port}" for server in servers]
    subprocess.run(
        [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    wait_for(
        lambda: all(redis_info(s.port, "cluster") and _cluster_ok(s.port) for s in servers),
        "the cluster to be ok",
    )


def _cluster_ok(port: int) -> bool:
    with contextlib.suppress(redis.RedisError), redis.Redis(port=port, socket_timeout=1) as r:
        info = r.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
        return bool(info.get("cluster_state") in ("ok", b"ok"))
    return False


@event_type("test.tick")
class Tick:
    """A numbered event: ``n`` tells order, loss and repetition apart."""

    n: int


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a test's coroutine in a fresh loop, bounded in time.

    The loop runs in a thread of its own: Playwright's sync API (the browser tests)
    leaves a loop marked running in the main thread for the rest of the session.
    """

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-loop") as pool:
        return pool.submit(asyncio.run, bounded()).result()


@asynccontextmanager
async def started(broadcaster: Broadcaster) -> AsyncIterator[Broadcaster]:
    """Start ``broadcaster`` and always close it, so no task or connection outlives a test."""
    try:
        await broadcaster.start()
        yield broadcaster
    finally:
        await broadcaster.close()


async def take(events: Subscription, count: int, timeout: float = 5.0) -> list[Event]:
    """The next ``count`` events, or fail after ``timeout`` seconds."""

    async def collect() -> list[Event]:
        return [await events.__anext__() for _ in range(count)]

    return await asyncio.wait_for(collect(), timeout)


async def nothing_more(events: Subscription, within: float = 0.3) -> bool:
    """True when no further event arrives ``within`` seconds."""
    try:
        await asyncio.wait_for(events.__anext__(), within)
    except asyncio.TimeoutError:
        return True
    return False


async def wait_until(
    condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def apublish_retrying(broadcaster: Broadcaster, n: int, timeout: float = 10.0) -> Event:
    """``apublish(Tick(n))`` until Redis takes it (a test outlasting an outage)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await broadcaster.apublish(Tick(n=n))
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


def numbers(events: list[Event]) -> list[int]:
    return [int(e.payload["n"]) for e in events]


__all__ = [
    "RedisServer",
    "SentinelSet",
    "Tick",
    "apublish_retrying",
    "create_cluster",
    "documented_acl",
    "free_port",
    "nothing_more",
    "numbers",
    "redis_info",
    "run",
    "started",
    "take",
    "wait_for",
    "wait_until",
]
