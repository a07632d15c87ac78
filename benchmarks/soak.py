"""Soak: thousands of WebSocket clients on one worker for a long time, with churn, and nothing
may be lost.

One uvicorn worker, a process of its own with the memory backend, serves the livepanel
endpoint behind Basic Auth and publishes numbered events at a steady rate. This process
holds the clients (a lean RFC 6455 client; half of them ask for ``?batch=1``) and every
``--reconnect-every`` seconds closes a random ``--reconnect-fraction`` of them; each comes
back at once with ``since`` = the last id it saw (``welcome.lastEventId`` before the first).

Every client must see every event exactly once, in order. The report counts events
published and delivered, events lost (by clients never closed as slow, which must be 0, and
by clients closed with 1013, reported apart), duplicates (0), resume_unavailable answers,
reconnections and closes, the server's RSS at start and end and its CPU, the latency of live
events (publish to arrival: both processes read CLOCK_MONOTONIC), and the machine's load.
The exit status is 1 when anything was lost or repeated.

    python benchmarks/soak.py --duration 600                    # 2,000 clients, 5 events/s
    python benchmarks/soak.py --duration 30 --clients 200 --json report.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import platform
import random
import resource
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

USER = "soak"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
LATENCY_STEP = 0.0001  # the latency histogram's resolution: 0.1 ms
LATENCY_SLOTS = 100_000  # up to 10 s; anything slower counts in the last slot


# --------------------------------------------------------------------- the server process


def serve(port: int, history: int, queue_size: int, ws: str) -> None:
    """Run the soak server: the endpoint at /ws, POST /start?rate=&count= and GET /stats."""
    import logging

    import uvicorn

    from livepanel import BasicAuth, Broadcaster, LivePanelMiddleware, event_type

    @event_type("soak.tick")
    class SoakTick:
        n: int
        sent: float

    logging.getLogger("livepanel").setLevel(logging.WARNING)
    password = os.environ["SOAK_PASSWORD"]
    broadcaster = Broadcaster(history=history, queue_size=queue_size)
    published = 0
    tasks: set[asyncio.Task[None]] = set()

    async def publish(rate: float, count: int) -> None:
        nonlocal published
        loop = asyncio.get_running_loop()
        began = loop.time()
        for n in range(count):
            broadcaster.publish(SoakTick(n=n, sent=time.monotonic()))
            published = n + 1
            await asyncio.sleep(max(0.0, began + (n + 1) / rate - loop.time()))

    async def control(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if p)
        if scope["path"] == "/start":
            task = asyncio.ensure_future(publish(float(query["rate"]), int(query["count"])))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            body = b"{}"
        elif scope["path"] == "/stats":
            body = json.dumps(
                {
                    "published": published,
                    "connections": middleware.endpoint.connection_count,
                    "broadcaster": broadcaster.stats(),
                }
            ).encode()
        else:
            body = b'{"error": "not_found"}'
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    middleware = LivePanelMiddleware(
        control,
        path="/ws",
        broadcaster=broadcaster,
        auth=BasicAuth(lambda user, given: secrets.compare_digest(given, password)),
        client_rate=None,
        auth_failure_limit=None,
    )
    uvicorn.run(
        middleware,
        host="127.0.0.1",
        port=port,
        ws=ws,
        lifespan="off",
        log_level="warning",
        backlog=4096,
    )


# --------------------------------------------------------------------- the clients


@dataclass
class Totals:
    """What every client saw, added up."""

    received: int = 0
    live: int = 0
    duplicates: int = 0
    lost: int = 0  # by clients never closed as slow: must stay 0
    lost_slow: int = 0  # by clients closed with 1013 at least once
    lost_after_gap: int = 0  # announced by resume_unavailable
    resume_unavailable: int = 0
    forced_reconnects: int = 0
    slow_closes: int = 0
    other_closes: dict[str, int] = field(default_factory=dict)
    failed_connects: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * LATENCY_SLOTS)

    def percentile(self, q: float) -> float | None:
        total = sum(self.latency)
        if not total:
            return None
        rank = q * (total - 1)
        seen = 0
        for slot, count in enumerate(self.latency):
            seen += count
            if seen > rank:
                return (slot + 1) * LATENCY_STEP
        return LATENCY_SLOTS * LATENCY_STEP

    def worst(self) -> float | None:
        for slot in range(LATENCY_SLOTS - 1, -1, -1):
            if self.latency[slot]:
                return (slot + 1) * LATENCY_STEP
        return None


class Wire(asyncio.Protocol):
    """A lean WebSocket client connection (RFC 6455), enough for the soak: the handshake,
    unmasked text frames from the server (fragmented or not), ping, pong and close.
    websockets' asyncio client costs several times more CPU per frame, and with
    thousands of clients in one process that cost would show up as latency."""

    def __init__(self, request: bytes, key: str, on_text: Any) -> None:
        self.request = request
        self.accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        )
        self.on_text = on_text
        self.buffer = bytearray()
        self.fragments: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.close_sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"lost during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(self.close_code or 1006)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.opened.done():
            head, found, _ = bytes(buffer).partition(b"\r\n\r\n")
            if not found:
                return
            del buffer[: len(head) + 4]
            status = head.split(b" ", 2)[1]
            if status != b"101" or self.accept not in head:
                self.opened.set_exception(ConnectionError(f"HTTP {status.decode()}"))
                assert self.transport is not None
                self.transport.close()
                return
            self.opened.set_result(None)
        while len(buffer) >= 2:
            first, length = buffer[0], buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            self.frame(first & 0x0F, bool(first & 0x80), payload)

    def frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode in (0x1, 0x0):  # text, or a continuation of one
            if fin and not self.fragments:
                self.on_text(payload.decode())
            else:
                self.fragments.append(payload)
                if fin:
                    self.on_text(b"".join(self.fragments).decode())
                    self.fragments.clear()
        elif opcode == 0x8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.send_close(1000)
            assert self.transport is not None
            self.transport.close()
        elif opcode == 0x9:
            self.send(0xA, payload)

    def send(self, opcode: int, payload: bytes) -> None:
        """Write one masked frame (payloads under 126 bytes: pong and close only)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def send_close(self, code: int) -> None:
        if not self.close_sent and self.transport is not None:
            self.close_sent = True
            self.send(0x8, code.to_bytes(2, "big"))


class SoakClient:
    """One dashboard: connects, checks every event's number, reconnects with since."""

    def __init__(self, index: int, port: int, authorization: str, totals: Totals) -> None:
        self.index = index
        self.port = port
        self.batch = index % 2 == 1
        self.authorization = authorization
        self.totals = totals
        self.next_n = 0  # the number of the event it must see next
        self.last_id: str | None = None
        self.welcome_id: str | None = None
        self.gap = False  # told resume_unavailable: the next number may jump
        self.was_slow = False
        self.wire: Wire | None = None
        self.opened = 0.0
        self.connected = asyncio.Event()
        self.stopping = False

    def request(self, key: str) -> bytes:
        query = [f"since={self.last_id}"] if self.last_id else []
        if self.batch:
            query.append("batch=1")
        target = "/ws" + ("?" + "&".join(query) if query else "")
        return (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: {self.authorization}\r\n\r\n"
        ).encode()

    async def run(self, gate: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(1_000_000):  # bounded: one pass per connection
            if self.stopping:
                return
            key = base64.b64encode(os.urandom(16)).decode()
            wire = Wire(self.request(key), key, self.on_text)
            try:
                async with gate:
                    await loop.create_connection(lambda w=wire: w, "127.0.0.1", self.port)
                    await asyncio.wait_for(wire.opened, 60)
            except Exception as exc:  # refused, reset, an HTTP error: try again shortly
                if wire.transport is not None:
                    wire.transport.abort()
                if self.stopping:
                    return
                self.totals.failed_connects += 1
                name = str(exc)[:40] or type(exc).__name__
                self.totals.other_closes[name] = self.totals.other_closes.get(name, 0) + 1
                await asyncio.sleep(random.uniform(0.05, 0.5))
                continue
            self.wire, self.opened = wire, time.monotonic()
            code = await wire.closed
            self.wire = None
            self.connected.clear()
            if code == 1013:
                self.was_slow = True
                self.totals.slow_closes += 1
            elif code != 1000:
                key = f"close {code}"
                self.totals.other_closes[key] = self.totals.other_closes.get(key, 0) + 1

    def on_text(self, text: str) -> None:
        for line in text.split("\n"):
            self.on_frame(json.loads(line))

    def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "welcome":
            self.welcome_id = frame["payload"]["lastEventId"]
            if self.last_id is None:
                self.last_id = self.welcome_id
            self.connected.set()
            return
        if kind == "error":
            if frame["payload"]["code"] == "resume_unavailable":
                self.totals.resume_unavailable += 1
                self.gap = True
                self.last_id = self.welcome_id
            return
        if kind != "soak.tick":
            return
        totals = self.totals
        n = frame["payload"]["n"]
        totals.received += 1
        if n < self.next_n:
            totals.duplicates += 1
            return
        if n > self.next_n:
            missing = n - self.next_n
            if self.gap:
                totals.lost_after_gap += missing
            elif self.was_slow:
                totals.lost_slow += missing
            else:
                totals.lost += missing
        self.gap = False
        self.next_n = n + 1
        self.last_id = frame["id"]
        sent = frame["payload"]["sent"]
        if sent >= self.opened:  # published while connected: a live event, not a replay
            totals.live += 1
            slot = min(LATENCY_SLOTS - 1, int((time.monotonic() - sent) / LATENCY_STEP))
            totals.latency[slot] += 1

    async def close(self) -> None:
        """Close the connection as a browser tab would (1000) and wait for the server."""
        wire = self.wire
        if wire is not None:
            wire.send_close(1000)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(wire.closed), 10)
            if wire.transport is not None:
                wire.transport.close()

    async def reconnect(self) -> None:
        """Close; run() comes straight back with since."""
        if self.wire is not None:
            self.totals.forced_reconnects += 1
            await self.close()

    async def stop(self) -> None:
        self.stopping = True
        await self.close()


# --------------------------------------------------------------------- process helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_file_limit(needed: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to ``needed`` (within the hard limit); return the limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def rss(pid: int) -> int:
    """Resident memory of process ``pid``, in bytes (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(port: int, path: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with OPENER.open(request, timeout=30) as response:
        document: dict[str, Any] = json.load(response)
        return document


@contextlib.contextmanager
def server_process(args: argparse.Namespace, password: str) -> Iterator[tuple[int, int]]:
    port = free_port()
    command = [
        *(sys.executable, __file__, "--serve", "--port", str(port)),
        *("--history", str(args.history), "--queue-size", str(args.queue_size), "--ws", args.ws),
    ]
    env = {**os.environ, "SOAK_PASSWORD": password}
    process = subprocess.Popen(command, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the soak server exited with {process.returncode}")
            with contextlib.suppress(OSError):
                get_json(port, "/stats")
                break
            if time.monotonic() > deadline:
                raise SystemExit("the soak server did not start within 30 s")
            time.sleep(0.05)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------- the run


async def soak(args: argparse.Namespace, port: int, pid: int, password: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    totals = Totals()
    clients = [SoakClient(i, port, f"Basic {token}", totals) for i in range(args.clients)]
    gate = asyncio.Semaphore(args.connect_concurrency)
    rss_idle = rss(pid)
    load_start = os.getloadavg()

    began = time.monotonic()
    tasks = [asyncio.ensure_future(c.run(gate)) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 300)
    connect_time = time.monotonic() - began
    stats = get_json(port, "/stats")
    assert stats["connections"] == args.clients, stats
    rss_start = rss(pid)

    count = int(args.duration * args.rate)
    cpu_before, my_cpu_before = cpu_seconds(pid), time.process_time()
    started = loop.time()
    get_json(port, f"/start?rate={args.rate}&count={count}", "POST")
    churn = 0
    samples: list[dict[str, Any]] = []
    while loop.time() - started < args.duration:
        await asyncio.sleep(min(args.reconnect_every, args.duration - (loop.time() - started)))
        if loop.time() - started >= args.duration:
            break
        chosen = random.sample(clients, max(1, int(args.reconnect_fraction * args.clients)))
        await asyncio.gather(*(c.reconnect() for c in chosen))
        churn += 1
        samples.append({"rss": rss(pid), "load": os.getloadavg()[0]})
    # publishing ends on schedule; then every client must catch up
    deadline = loop.time() + 120
    while loop.time() < deadline:
        stats = await asyncio.to_thread(get_json, port, "/stats")
        if stats["published"] >= count and all(c.next_n >= count for c in clients):
            break
        await asyncio.sleep(0.5)
    elapsed = loop.time() - started
    server_cpu = cpu_seconds(pid) - cpu_before
    client_cpu = time.process_time() - my_cpu_before
    rss_end = rss(pid)
    load_end = os.getloadavg()
    stats = get_json(port, "/stats")

    tail_lost = 0
    for c in clients:
        missing = max(0, count - c.next_n)
        if missing:
            tail_lost += missing
            if c.was_slow:
                totals.lost_slow += missing
            else:
                totals.lost += missing
    await asyncio.gather(*(c.stop() for c in clients))
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)

    p50, p99, worst = totals.percentile(0.5), totals.percentile(0.99), totals.worst()
    return {
        "clients": args.clients,
        "duration_s": args.duration,
        "rate_per_s": args.rate,
        "reconnect": f"{args.reconnect_fraction:.0%} every {args.reconnect_every:g} s",
        "server": f"uvicorn --ws {args.ws}, memory backend, history {args.history}, "
        f"queue_size {args.queue_size}",
        "connect_all_s": round(connect_time, 2),
        "events_published": stats["published"],
        "deliveries_expected": stats["published"] * args.clients,
        "events_delivered": totals.received,
        "live_deliveries": totals.live,
        "replayed_by_server": stats["broadcaster"]["replayed"],
        "lost": totals.lost,
        "lost_by_slow_closed_clients": totals.lost_slow,
        "lost_after_resume_unavailable": totals.lost_after_gap,
        "lost_at_the_end": tail_lost,
        "duplicates": totals.duplicates,
        "resume_unavailable": totals.resume_unavailable,
        "forced_reconnects": totals.forced_reconnects,
        "churn_rounds": churn,
        "slow_closes_1013": totals.slow_closes,
        "other_closes": totals.other_closes,
        "failed_connects": totals.failed_connects,
        "latency_ms": {
            "p50": None if p50 is None else round(p50 * 1000, 1),
            "p99": None if p99 is None else round(p99 * 1000, 1),
            "max": None if worst is None else round(worst * 1000, 1),
        },
        "server_rss_mb": {
            "idle": round(rss_idle / 2**20, 1),
            "start": round(rss_start / 2**20, 1),
            "end": round(rss_end / 2**20, 1),
            "samples": [round(s["rss"] / 2**20, 1) for s in samples[:: max(1, len(samples) // 12)]],
        },
        "server_cpu_percent": round(100 * server_cpu / elapsed, 1),
        "client_cpu_percent": round(100 * client_cpu / elapsed, 1),
        "load_average": {
            "start": load_start,
            "end": load_end,
            "samples_1min": [s["load"] for s in samples[:: max(1, len(samples) // 12)]],
        },
        "cpus": os.cpu_count(),
        "ulimit_n": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of publishing")
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=5.0, help="events per second")
    parser.add_argument("--reconnect-fraction", type=float, default=0.1)
    parser.add_argument("--reconnect-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--history", type=int, default=5000)
    parser.add_argument("--queue-size", type=int, default=1000)
    parser.add_argument("--ws", default="websockets-sansio", help="uvicorn's --ws")
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--json", help="also write the report to this file")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port, args.history, args.queue_size, args.ws)
        return 0
    raise_file_limit(args.clients * 2 + 256)  # the server process inherits the limit
    password = secrets.token_urlsafe(16)
    with server_process(args, password) as (port, pid):
        report = asyncio.run(soak(args, port, pid, password))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as out:
            out.write(text + "\n")
    return 1 if report["lost"] or report["duplicates"] else 0


if __name__ == "__main__":
    sys.exit(main())
