"""Server processes that can be signalled or killed, and a loopback load balancer in front
of them, for the fault tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.redis.redis_helpers import free_port

ROOT = Path(__file__).parents[2]  # the repository, so the tests package imports
APP = "tests.redis.redis_worker_app:create_app"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, no proxy
HYPERCORN_NOISE = "Exception in callback StreamReaderProtocol.connection_made"
"""asyncio's complaint about the connection task hypercorn cancels at its graceful timeout."""


@dataclass
class ServerProcess:
    """An ASGI server in a process of its own, serving tests.redis.redis_worker_app:
    the livepanel endpoint at /ws/, POST /publish and GET /health."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.port}/health"
        with contextlib.suppress(OSError), OPENER.open(url, timeout=1) as response:
            document: dict[str, Any] = json.load(response)
            return document
        return None

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def command(kind: str, port: int, app: str = APP) -> list[str]:
    """The command line of server ``kind``: uvicorn-<ws>, hypercorn (worker processes, its
    default) or hypercorn-0 (the app in the main process)."""
    if kind.startswith("uvicorn"):
        ws = kind.partition("-")[2] or "auto"
        return [
            *(sys.executable, "-m", "uvicorn", app, "--factory", "--app-dir", str(ROOT)),
            *("--host", "127.0.0.1", "--port", str(port), "--ws", ws),
            *("--lifespan", "on", "--log-level", "info"),
        ]
    if kind.startswith("hypercorn"):
        workers = "0" if kind == "hypercorn-0" else "1"
        return [
            *(sys.executable, "-m", "hypercorn", f"{app}()", "--bind", f"127.0.0.1:{port}"),
            *("--workers", workers, "--graceful-timeout", "1", "--log-level", "INFO"),
        ]
    raise ValueError(f"unknown server kind {kind!r}")


@contextlib.contextmanager
def server_processes(
    kinds: Sequence[str], directory: Path, backend_url: str | None = None, app: str = APP
) -> Iterator[list[ServerProcess]]:
    """Start one server per kind (in parallel) and wait until each answers /health.
    At the end every process still running is terminated, then killed."""
    # this tree's livepanel, whichever checkout the environment has installed
    path = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    env.pop("LIVEPANEL_BACKEND_URL", None)
    if backend_url is not None:
        env["LIVEPANEL_BACKEND_URL"] = backend_url
    started: list[ServerProcess] = []
    try:
        for n, kind in enumerate(kinds):
            port = free_port()
            log = directory / f"server-{n}-{kind}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    command(kind, port, app),
                    env=env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            started.append(ServerProcess(kind, port, process, log))
        deadline = time.monotonic() + 30
        for server in started:
            while server.health() is None:
                if server.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{server.kind} did not start:\n{server.output()}")
                time.sleep(0.05)
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.process.terminate()
        for server in started:
            try:
                server.process.wait(15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(5)


def tracebacks(server: ServerProcess) -> list[str]:
    """The tracebacks in a server's output, less hypercorn's own cancellation noise."""
    blocks = server.output().split("Traceback (most recent call last)")[1:]
    noise = server.kind.startswith("hypercorn") and HYPERCORN_NOISE in server.output()
    return [b for b in blocks if not (noise and "CancelledError" in b)]


# ---------------------------------------------------------------------- a load balancer


@dataclass
class Balancer:
    """A TCP load balancer on 127.0.0.1: each connection goes to the next backend that
    accepts it (round robin), as nginx or HAProxy would; a dead backend is skipped."""

    backends: list[int]
    port: int = 0
    routed: dict[int, int] = field(default_factory=dict)  # backend port -> connections so far
    _next: int = 0
    _server: asyncio.Server | None = None
    _pipes: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    async def _connect_upstream(
        self,
    ) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            return port, reader, writer
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect_upstream()
        if upstream is None:
            writer.close()
            return
        port, up_reader, up_writer = upstream
        self.routed[port] = self.routed.get(port, 0) + 1
        pipes = [
            asyncio.ensure_future(_pipe(reader, up_writer)),
            asyncio.ensure_future(_pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes.difference_update(pipes)
            for w in (writer, up_writer):
                w.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Balancer]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for task in list(self._pipes):
                task.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}
