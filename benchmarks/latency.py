"""Publish-to-receive latency for many WebSocket clients, and publish throughput: the memory,
Redis and PostgreSQL backends.

Each backend is served by uvicorn in a process of its own on 127.0.0.1; this
process connects the clients (websockets' asyncio client), asks the server to
publish numbered events at a steady pace, and measures, per event and client,
the time from ``broadcaster.publish()`` in the server to the frame arriving
here (both read CLOCK_MONOTONIC). Prints a small markdown table.

    python benchmarks/latency.py                      # 100 clients, private redis-server
    python benchmarks/latency.py --clients 200 --events 500 --redis-url redis://127.0.0.1:6379/15

Without ``--redis-url`` a private ``redis-server`` (no persistence) is started
in a temporary directory and stopped at the end. PostgreSQL is the one at
``--postgres-url`` (default: 127.0.0.1:5432, database ``test``, a table of its
own); it is left out, with a note, when it does not answer. Throughput is the
rate at which ``publish()`` of a burst of events reaches a subscriber in the
server, from the first publish to the last delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

STREAM = "livepanel:bench"


# --------------------------------------------------------------------- server process


def serve(backend: str, port: int) -> None:
    """Run the benchmark server: the livepanel endpoint at /ws/ and POST /start."""
    import logging

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Mount, Route

    from livepanel import Broadcaster, LivePanelApp, event_type

    @event_type("bench.ping")
    class BenchPing:
        seq: int
        sent: float

    logging.getLogger("livepanel").setLevel(logging.ERROR)  # no anonymous-access warning
    broadcaster = Broadcaster(None if backend == "memory" else backend, queue_size=10000)
    tasks: set[asyncio.Task[None]] = set()

    async def publish(count: int, interval: float) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        for seq in range(count):
            broadcaster.publish(BenchPing(seq=seq, sent=time.monotonic()))
            await asyncio.sleep(max(0.0, began + (seq + 1) * interval - loop.time()))

    async def throughput(request: Request) -> Response:
        count = int(request.query_params["count"])
        async with broadcaster.subscribe(["bench.*"]) as events:
            began = time.monotonic()
            for seq in range(count):
                broadcaster.publish(BenchPing(seq=-1 - seq, sent=0.0))
            received = 0
            async for _ in events:
                received += 1
                if received == count:
                    break
            elapsed = time.monotonic() - began
        return Response(json.dumps({"eventsPerSecond": count / elapsed}))

    async def start(request: Request) -> Response:
        count = int(request.query_params["count"])
        interval = float(request.query_params["interval"])
        task = asyncio.ensure_future(publish(count, interval))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return Response(status_code=202)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await broadcaster.start()
        yield
        await broadcaster.close()

    app = Starlette(
        routes=[
            Route("/start", start, methods=["POST"]),
            Route("/throughput", throughput, methods=["POST"]),
            Mount("/ws", LivePanelApp(broadcaster, auth=None, client_rate=None)),
        ],
        lifespan=lifespan,
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws="wsproto")


# --------------------------------------------------------------------- measuring side


@dataclass
class Result:
    backend: str
    clients: int
    events: int
    latencies_ms: list[float]
    events_per_second: float

    def row(self) -> str:
        data = sorted(self.latencies_ms)
        cuts = statistics.quantiles(data, n=100, method="inclusive")
        return (
            f"| {self.backend} | {self.clients} | {self.events} | {len(data)} "
            f"| {cuts[49]:.2f} | {cuts[98]:.2f} | {data[-1]:.2f} "
            f"| {self.events_per_second:,.0f} |"
        )


def measure_throughput(port: int, count: int) -> float:
    """Events a second from a burst of ``count`` publishes to their delivery, in the server."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/throughput?count={count}", method="POST"
    )
    with opener.open(request, timeout=120) as response:
        return float(json.load(response)["eventsPerSecond"])


def postgres_answers(url: str) -> bool:
    """Whether PostgreSQL at ``url`` takes a connection (psycopg from the postgres extra)."""
    try:
        import psycopg

        with psycopg.connect(url.partition("?")[0], connect_timeout=3):
            return True
    except Exception:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


@contextlib.contextmanager
def server(backend: str) -> Iterator[int]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", backend, "--port", str(port)]
    process = subprocess.Popen(command)
    try:
        wait_listening(port, process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH; pass --redis-url or install it")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder]
        args += ["--save", "", "--appendonly", "no", "--logfile", os.path.join(folder, "log")]
        process = subprocess.Popen(args)
        try:
            wait_listening(port, process)
            yield f"redis://127.0.0.1:{port}/0?stream={STREAM}"
        finally:
            process.kill()
            process.wait()


async def measure(
    port: int, clients: int, events: int, warmup: int, interval: float
) -> list[float]:
    from websockets.asyncio.client import connect

    total = warmup + events
    latencies: list[float] = []
    done = 0
    all_done = asyncio.Event()

    async def client(ready: asyncio.Event, go: asyncio.Event) -> None:
        nonlocal done
        async with connect(
            f"ws://127.0.0.1:{port}/ws/", proxy=None, max_queue=None, compression=None
        ) as ws:
            json.loads(await ws.recv())  # welcome
            ready.set()
            await go.wait()
            seen = 0
            while seen < total:
                frame: dict[str, Any] = json.loads(await ws.recv())
                if frame.get("type") != "bench.ping":
                    continue
                arrived = time.monotonic()
                seen += 1
                if frame["payload"]["seq"] >= warmup:
                    latencies.append((arrived - frame["payload"]["sent"]) * 1000)
        done += 1
        if done == clients:
            all_done.set()

    go = asyncio.Event()
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.ensure_future(client(ready, go)) for ready in readies]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
    go.set()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/start?count={total}&interval={interval}", method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    await asyncio.to_thread(opener.open, request, timeout=10)
    try:
        await asyncio.wait_for(all_done.wait(), total * interval + 30)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="WebSocket clients (100)")
    parser.add_argument("--events", type=int, default=200, help="measured events (200)")
    parser.add_argument("--warmup", type=int, default=20, help="events not measured (20)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between events")
    parser.add_argument("--redis-url", help="an existing Redis (default: a private redis-server)")
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/test?table=livepanel_bench",
        help="a PostgreSQL for its backend (default: 127.0.0.1:5432, database test)",
    )
    parser.add_argument("--burst", type=int, default=5000, help="events of the throughput burst")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return

    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        redis_url = args.redis_url or stack.enter_context(private_redis())
        backends = [("memory", "memory"), ("redis", redis_url)]
        if postgres_answers(args.postgres_url):
            backends.append(("postgres", args.postgres_url))
        else:
            print(f"no PostgreSQL answers at {args.postgres_url}: left out", file=sys.stderr)
        for name, backend in backends:
            with server(backend) as port:
                latencies = asyncio.run(
                    measure(port, args.clients, args.events, args.warmup, args.interval)
                )
                rate = measure_throughput(port, args.burst)
            results.append(Result(name, args.clients, args.events, latencies, rate))

    print(
        f"\npublish-to-receive latency, uvicorn (wsproto) on 127.0.0.1, one event every "
        f"{args.interval * 1000:g} ms; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs\n"
    )
    print(
        "| backend | clients | events | samples | p50 (ms) | p99 (ms) | max (ms) "
        "| throughput (events/s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        print(result.row())


if __name__ == "__main__":
    main()
