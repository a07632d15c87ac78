"""What every benchmark target shares: the frame, the publisher loop, the control port.

A target is a small server script run as a subprocess by ``benchmarks/fanout.py``.
It serves WebSocket clients on ``BENCH_PORT`` and, inside the same event loop,
a line-based control server on ``BENCH_CONTROL_PORT`` (127.0.0.1 only):

* ``stats`` -> ``{"pid", "rss", "hwm", "cpu", "connections", "nofile"}`` (bytes,
  seconds; ``nofile``: the open-files limit, raised to the hard limit on import)
* ``go N M [R]`` -> waits until N clients are registered, answers
  ``{"started": ns}``, broadcasts M events one per event-loop turn (or R per
  second, on a fixed schedule, when R > 0), answers ``{"published": ns}``
  (``time.monotonic_ns()``, the clock the client reads).

Configuration comes from the environment, so that servers which import the
application by name (granian) see the same settings as the others.
``BENCH_LOOP=uvloop`` runs the uvicorn targets on uvloop (when importable)
instead of the standard asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "EVENT_TYPE",
    "Target",
    "envelope",
    "frame",
    "payload",
    "serve_asgi",
    "with_control",
]

EVENT_TYPE = "bench.tick"
FRAME_BYTES = 200
# livepanel's frame is {"type","timestamp","payload":{seq,t,pad},"id"}; every peer sends the same
_PAD = "x" * 64
_STAMP = "2026-01-01T00:00:00.000Z"

Count = Callable[[], int]
BroadcastOne = Callable[[int], "Awaitable[Any] | None"]


def payload(seq: int) -> dict[str, Any]:
    """The event's payload: its sequence number and publish time (monotonic ns)."""
    return {"seq": seq, "t": time.monotonic_ns(), "pad": _PAD}


def envelope(seq: int) -> dict[str, Any]:
    """The whole frame as a dict, shaped like a livepanel event (about 200 bytes as JSON)."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")[:23] + "Z"
    return {
        "type": EVENT_TYPE,
        "timestamp": stamp,
        "payload": payload(seq),
        "id": f"0123abcd:{seq + 1}",
    }


def frame(seq: int) -> str:
    """The frame's JSON text, encoded once per broadcast as every target does."""
    return json.dumps(envelope(seq), separators=(",", ":"))


def _raise_nofile() -> None:
    """Open files up to the hard limit: the server holds one socket per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_raise_nofile()


def _proc_status() -> dict[str, int]:
    values: dict[str, int] = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value, _unit = line.split()
                values[key[:-1]] = int(value) * 1024
    return values


class Target:
    """One server's hooks: how many clients it holds and how to broadcast one event."""

    def __init__(self, count: Count, broadcast_one: BroadcastOne) -> None:
        self.count = count
        self.broadcast_one = broadcast_one
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start_control(self) -> None:
        port = int(os.environ["BENCH_CONTROL_PORT"])
        self._server = await asyncio.start_server(self._control, "127.0.0.1", port)

    async def stop_control(self) -> None:
        if self._server is not None:
            self._server.close()

    def stats(self) -> dict[str, Any]:
        status = _proc_status()
        times = os.times()
        return {
            "pid": os.getpid(),
            "rss": status.get("VmRSS", 0),
            "hwm": status.get("VmHWM", 0),
            "cpu": times.user + times.system,
            "connections": self.count(),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "gc": [generation["collections"] for generation in gc.get_stats()],
        }

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                words = line.decode().split()
                if words[:1] == ["stats"]:
                    reply: dict[str, Any] = self.stats()
                    writer.write(json.dumps(reply).encode() + b"\n")
                elif words[:1] == ["go"]:
                    self._profile_start()
                    rate = float(words[3]) if len(words) > 3 else 0.0
                    await self._go(int(words[1]), int(words[2]), writer, rate)
                elif words[:1] == ["stop"]:
                    writer.write(json.dumps(self._profile_stop()).encode() + b"\n")
                else:
                    writer.write(b'{"error": "unknown command"}\n')
                await writer.drain()
        writer.close()

    def _profile_start(self) -> None:
        """BENCH_PROFILE=cprofile:PATH or pyinstrument:PATH profiles from ``go`` to ``stop``."""
        kind, _, _path = os.environ.get("BENCH_PROFILE", "").partition(":")
        if kind == "cprofile":
            import cProfile

            self._profiler = cProfile.Profile()
            self._profiler.enable()
        elif kind == "pyinstrument":
            import pyinstrument

            self._profiler = pyinstrument.Profiler(interval=0.0005, async_mode="disabled")
            self._profiler.start()

    def _profile_stop(self) -> dict[str, Any]:
        profiler = getattr(self, "_profiler", None)
        if profiler is None:
            return {}
        self._profiler = None
        kind, _, path = os.environ["BENCH_PROFILE"].partition(":")
        if kind == "cprofile":
            profiler.disable()
            profiler.dump_stats(path)
        else:
            profiler.stop()
            with open(path, "w") as out:
                out.write(profiler.output_text(unicode=False, color=False, show_all=False))
            with open(path + ".html", "w") as out:
                out.write(profiler.output_html())
        return {"profile": path}

    async def _go(
        self, clients: int, events: int, writer: asyncio.StreamWriter, rate: float = 0.0
    ) -> None:
        deadline = time.monotonic() + 60
        while self.count() < clients and time.monotonic() < deadline:  # noqa: ASYNC110 - a count
            await asyncio.sleep(0.01)
        if self.count() < clients:
            writer.write(json.dumps({"error": f"{self.count()} of {clients} clients"}).encode())
            writer.write(b"\n")
            return
        writer.write(json.dumps({"started": time.monotonic_ns()}).encode() + b"\n")
        await writer.drain()
        broadcast_one = self.broadcast_one
        sleep = asyncio.sleep
        begin = time.monotonic()
        for seq in range(events):
            pending = broadcast_one(seq)
            if pending is not None:
                await pending
            if rate:  # on a fixed schedule: a late event does not push the next ones back
                await sleep(max(0.0, begin + (seq + 1) / rate - time.monotonic()))
            else:
                await sleep(0)  # one broadcast per event-loop turn: the writers run in between
        writer.write(json.dumps({"published": time.monotonic_ns()}).encode() + b"\n")


def with_control(app: Any, target: Target) -> Any:
    """Wrap an ASGI app so that its lifespan startup also opens the control port."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def lifespan_receive() -> Any:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await target.start_control()
            elif message["type"] == "lifespan.shutdown":
                await target.stop_control()
            return message

        await app(scope, lifespan_receive, send)

    return wrapped


SERVERS = ("uvicorn", "uvicorn-websockets", "uvicorn-wsproto", "hypercorn", "granian")


def serve_asgi(module: str, app: Any, server: str) -> None:
    """Serve ``app`` (importable as ``module:app`` for granian) on ``BENCH_PORT``.

    ``uvicorn`` is uvicorn's default WebSocket implementation (websockets'
    sans-I/O layer since uvicorn 0.35); the others name theirs.
    """
    port = int(os.environ["BENCH_PORT"])
    if server.startswith("uvicorn"):
        import uvicorn

        ws = {
            "uvicorn": "websockets-sansio",
            "uvicorn-websockets": "websockets",
            "uvicorn-wsproto": "wsproto",
        }[server]
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=port,
            ws=ws,
            lifespan="on",
            log_level="warning",
            backlog=4096,
            loop=os.environ.get("BENCH_LOOP", "asyncio"),  # "uvloop" when it is installed
            http="h11",
        )
    elif server == "hypercorn":
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.backlog = 4096
        config.loglevel = "WARNING"
        config.accesslog = None
        asyncio.run(serve(app, config))  # type: ignore[arg-type]
    elif server == "granian":
        from granian.constants import Interfaces, Loops
        from granian.server import Server

        Server(
            f"{module}:app",
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            workers=1,
            loop=Loops.asyncio,
            backlog=4096,
            backpressure=32768,
            websockets=True,
            log_enabled=os.environ.get("BENCH_LOG") == "1",
            working_dir=Path(__file__).resolve().parent,
        ).serve()
    else:
        raise SystemExit(f"unknown server {server!r}; expected one of {', '.join(SERVERS)}")
