"""Deploy: two workers on Redis restarted in turn while events flow, and nothing may be lost.

Two uvicorn workers, processes of their own on two ports, serve the livepanel endpoint on one
Redis stream (a private one, deleted at the end) with an admission rate and a reconnect
window. This process holds N load clients (the soak's lean RFC 6455 client) and publishes
numbered events at a steady rate. Each client picks a worker at random for each connection,
as a proxy would, and the other one when that one does not answer; it honours the retry
hints (close 1012/1013 ``retry_after=<seconds>``, 429 ``Retry-After``) with the contract's
jitter, uniform in [0, max(0.25 s, 20 % of the hint)], and resumes with ``since``.

Once every client is in and events flow, each worker in turn gets SIGTERM and is started
again on its port. The report: events lost and repeated (both must be 0), accepts per second
per worker (counted by the worker, by wall-clock second; never above the rate x 1.2), 429s
answered, and for each restart the time from the signal until every client it closed is back
(welcomed again). The exit status is 1 when anything was lost or repeated, a second held too
many accepts, or a client was not back within ``--back-within`` seconds.

    python benchmarks/deploy.py                                  # 1,000 clients, 50 events/s
    python benchmarks/deploy.py --clients 100 --rate 20 --window 3 --json report.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the soak's lean client and its process functions
from soak import Wire, free_port, get_json, raise_file_limit  # noqa: E402

PASSWORD = "deploy-load"
RETRY = re.compile(r"retry_after=(\d+(?:\.\d+)?)")
HISTORY = 100_000  # events the stream keeps: a client away for a while still resumes
MAX_HINT = 60.0  # a client never waits longer than this on one hint, whatever it is told


# --------------------------------------------------------------------- the worker process


def register_tick() -> Any:
    """The run's event type, ``deploy.tick``; every worker reading the stream registers it."""
    from livepanel import event_type

    @event_type("deploy.tick")
    class DeployTick:
        n: int

    return DeployTick


def serve(port: int, redis_url: str, log: str, rate: float, burst: int, window: float) -> None:
    """Run one worker: the endpoint at /ws on ``redis_url``, GET /health, and a line in
    ``log`` for each handshake accepted or refused over the rate (with its wall-clock time)."""
    import logging

    import uvicorn

    from livepanel import BasicAuth, Broadcaster, LivePanelApp

    logging.getLogger("livepanel").setLevel(logging.WARNING)
    register_tick()
    broadcaster = Broadcaster(redis_url, history=HISTORY, queue_size=2000)
    endpoint = LivePanelApp(
        broadcaster,
        auth=BasicAuth(lambda user, given: user if given == PASSWORD else None),
        admission_rate=rate,
        admission_burst=burst,
        reconnect_window=window,
        client_rate=None,
        auth_failure_limit=None,
    )
    out = open(log, "a", buffering=1)  # noqa: SIM115 - one line per handshake, for the run

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return

        async def noting(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept":
                out.write(f"accept {time.time():.3f}\n")
            elif message["type"] == "websocket.http.response.start":
                out.write(f"refused {message['status']} {time.time():.3f}\n")
            await send(message)

        await endpoint(scope, receive, noting)

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_level="warning",
        backlog=4096,
        timeout_graceful_shutdown=5,
    )


@dataclass
class Worker:
    name: str
    port: int
    log: Path
    args: argparse.Namespace
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            *(sys.executable, __file__, "--serve", "--port", str(self.port)),
            *("--redis", self.args.stream_url, "--log", str(self.log)),
            *("--rate", str(self.args.rate), "--burst", str(self.args.burst)),
            *("--window", str(self.args.window)),
        ]
        with open(self.log.with_suffix(".out"), "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"worker {self.name} exited with {self.process.returncode}")
            with contextlib.suppress(OSError):
                get_json(self.port, "/health")
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"worker {self.name} did not start within 30 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def counts(self) -> tuple[dict[int, int], int]:
        """Accepts by wall-clock second, and refusals over the rate (429)."""
        accepts: dict[int, int] = {}
        over_rate = 0
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if parts[0] == "accept":
                second = int(float(parts[1]))
                accepts[second] = accepts.get(second, 0) + 1
            elif parts[:2] == ["refused", "429"]:
                over_rate += 1
        return accepts, over_rate


# --------------------------------------------------------------------- the load clients


class HintedWire(Wire):
    """The soak's client, also reading a refusal's status and Retry-After and a close's
    reason."""

    def __init__(self, request: bytes, key: str, on_text: Any) -> None:
        super().__init__(request, key, on_text)
        self.status: int | None = None
        self.retry_after: float | None = None
        self.close_reason = ""

    def data_received(self, data: bytes) -> None:
        if not self.opened.done() and self.status is None:
            head, found, _ = (bytes(self.buffer) + data).partition(b"\r\n\r\n")
            if found:
                lines = head.decode("latin-1").split("\r\n")
                self.status = int(lines[0].split(" ", 2)[1])
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "retry-after" and value.strip().isdigit():
                        self.retry_after = float(value.strip())
        super().data_received(data)

    def frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == 0x8 and len(payload) > 2:
            self.close_reason = payload[2:].decode("utf-8", "replace")
        super().frame(opcode, fin, payload)


@dataclass
class Totals:
    received: int = 0
    duplicates: int = 0
    lost: int = 0
    resume_unavailable: int = 0
    told_429: int = 0
    told_1013: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    refused_connects: int = 0


class LoadClient:
    """One dashboard: connects to a worker, checks every event's number, and after a close or
    a refusal comes back when told (plus jitter), with since."""

    def __init__(self, index: int, ports: list[int], totals: Totals, batch: bool) -> None:
        self.index = index
        self.ports = ports
        self.totals = totals
        self.batch = batch
        self.authorization = "Basic " + base64.b64encode(
            f"load-{index}:{PASSWORD}".encode()
        ).decode("ascii")
        self.next_n = 0
        self.last_id: str | None = None
        self.wire: HintedWire | None = None
        self.connected = asyncio.Event()
        self.port: int | None = None
        self.closed_at: float | None = None  # when a worker's shutdown closed it
        self.back_after: list[float] = []  # seconds from such a close until welcomed again
        self.accepted_after: list[float] = []  # ... until a worker accepted it again (101)
        self.stopping = False

    def request(self, port: int, key: str) -> bytes:
        query = [f"since={self.last_id}"] if self.last_id else []
        if self.batch:
            query.append("batch=1")
        target = "/ws" + ("?" + "&".join(query) if query else "")
        return (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: {self.authorization}\r\n\r\n"
        ).encode()

    async def wait_hint(self, hint: float | None) -> None:
        """Sleep as the contract says: the hint plus jitter; a short backoff without one."""
        if hint is None:
            await asyncio.sleep(random.uniform(0.05, 0.3))
            return
        hint = min(hint, MAX_HINT)
        await asyncio.sleep(hint + random.uniform(0.0, max(0.25, 0.2 * hint)))

    async def connect_once(self) -> HintedWire | float | None:
        """One attempt, on a worker picked at random (the other if it does not answer): the
        open wire, or the hint of a refusal (``None``: no hint)."""
        loop = asyncio.get_running_loop()
        ports = random.sample(self.ports, len(self.ports))
        for port in ports:
            key = base64.b64encode(os.urandom(16)).decode()
            wire = HintedWire(self.request(port, key), key, self.on_text)
            try:
                await loop.create_connection(lambda w=wire: w, "127.0.0.1", port)
            except OSError:
                self.totals.refused_connects += 1
                continue  # the worker is down: the proxy tries the next one
            try:
                await asyncio.wait_for(wire.opened, 30)
            except Exception:
                if wire.transport is not None:
                    wire.transport.abort()
                if wire.status == 429:
                    self.totals.told_429 += 1
                return wire.retry_after
            self.port = port
            if self.closed_at is not None:
                self.accepted_after.append(time.monotonic() - self.closed_at)
            return wire
        return None

    async def run(self) -> None:
        for _ in range(100_000):  # bounded: one pass per attempt
            if self.stopping:
                return
            outcome = await self.connect_once()
            if not isinstance(outcome, HintedWire):
                await self.wait_hint(outcome)
                continue
            self.wire = outcome
            code = await outcome.closed
            self.wire = None
            self.connected.clear()
            if self.stopping:
                return
            name = f"close {code}"
            self.totals.closes[name] = self.totals.closes.get(name, 0) + 1
            match = RETRY.fullmatch(outcome.close_reason)
            self.closed_at = time.monotonic()  # back when welcomed again
            if code == 1013 and match:
                self.totals.told_1013 += 1
            await self.wait_hint(float(match[1]) if match else None)

    def on_text(self, text: str) -> None:
        for line in text.split("\n"):
            self.on_frame(json.loads(line))

    def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "welcome":
            if self.last_id is None:
                self.last_id = frame["payload"]["lastEventId"]
            if self.closed_at is not None:
                self.back_after.append(time.monotonic() - self.closed_at)
                self.closed_at = None
            self.connected.set()
            return
        if kind == "error":
            if frame["payload"]["code"] == "resume_unavailable":
                self.totals.resume_unavailable += 1
            return
        if kind != "deploy.tick":
            return
        n = frame["payload"]["n"]
        self.totals.received += 1
        if n < self.next_n:
            self.totals.duplicates += 1
            return
        self.totals.lost += n - self.next_n
        self.next_n = n + 1
        self.last_id = frame["id"]

    async def stop(self) -> None:
        self.stopping = True
        wire = self.wire
        if wire is not None:
            wire.send_close(1000)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(wire.closed), 5)
            if wire.transport is not None:
                wire.transport.close()


# --------------------------------------------------------------------- the run


async def publish(url: str, rate: float, stop: asyncio.Event) -> int:
    """Publish numbered events at ``rate`` per second until ``stop``; how many."""
    from livepanel import Broadcaster

    tick = register_tick()
    broadcaster = Broadcaster(url, history=HISTORY)  # every writer trims to the same length
    loop = asyncio.get_running_loop()
    began, n = loop.time(), 0
    try:
        while not stop.is_set():
            await broadcaster.apublish(tick(n=n))
            n += 1
            await asyncio.sleep(max(0.0, began + n / rate - loop.time()))
    finally:
        await broadcaster.close()
    return n


LAG = {"max": 0.0}  # how late the load clients' event loop ran (a busy process is late)


async def loop_lag() -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(0.1)
        LAG["max"] = max(LAG["max"], loop.time() - before - 0.1)


async def wait_all(clients: list[LoadClient], timeout: float) -> float:
    """Wait until every client is connected; the seconds it took."""
    began = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), timeout)
    return time.monotonic() - began


async def restart(worker: Worker, clients: list[LoadClient], timeout: float) -> dict[str, Any]:
    """SIGTERM one worker, start it again, and wait until every client it closed is back."""
    on_it = [c for c in clients if c.port == worker.port and c.wire is not None]
    for c in on_it:
        c.back_after.clear()
        c.accepted_after.clear()
    assert worker.process is not None
    signalled = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(worker.process.wait, 30)
    exited = time.monotonic() - signalled
    await asyncio.to_thread(worker.start)
    serving = time.monotonic() - signalled
    for _ in range(int(timeout * 10)):  # polled: the clients come back on their own
        if all(c.back_after for c in on_it):
            break
        await asyncio.sleep(0.1)
    back = sorted(c.back_after[0] for c in on_it if c.back_after)
    accepted = sorted(c.accepted_after[0] for c in on_it if c.accepted_after)
    return {
        "worker": worker.name,
        "clients_closed": len(on_it),
        "exited_s": round(exited, 2),
        "serving_again_s": round(serving, 2),
        "half_back_s": round(back[len(back) // 2], 2) if back else None,
        "all_back_s": round(back[-1], 2) if back else None,
        "all_accepted_s": round(accepted[-1], 2) if accepted else None,
        "not_back": len(on_it) - len(back),
    }


async def run(args: argparse.Namespace, workers: list[Worker]) -> dict[str, Any]:
    totals = Totals()
    ports = [w.port for w in workers]
    clients = [LoadClient(i, ports, totals, batch=i % 2 == 1) for i in range(args.clients)]
    load_start = os.getloadavg()
    lag = asyncio.ensure_future(loop_lag())
    tasks = [asyncio.ensure_future(c.run()) for c in clients]
    connect_all = await wait_all(clients, 300)
    stop = asyncio.Event()
    publisher = asyncio.ensure_future(publish(args.stream_url, args.events_per_second, stop))
    await asyncio.sleep(args.settle)
    restarts = []
    for worker in workers:
        restarts.append(await restart(worker, clients, args.back_within + 30))
        await asyncio.sleep(args.settle)
    stop.set()
    published = await publisher
    for _ in range(300):  # a minute at most for the last events to arrive everywhere
        if all(c.next_n >= published for c in clients):
            break
        await asyncio.sleep(0.2)
    for c in clients:
        totals.lost += max(0, published - c.next_n)  # never arrived at all
    load_end = os.getloadavg()
    lag.cancel()
    await asyncio.gather(*(c.stop() for c in clients))
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)

    per_worker = {}
    for worker in workers:
        accepts, over_rate = worker.counts()
        per_worker[worker.name] = {
            "accepts": sum(accepts.values()),
            "max_accepts_per_second": max(accepts.values(), default=0),
            "answered_429": over_rate,
        }
    return {
        "clients": args.clients,
        "events_per_second": args.events_per_second,
        "admission_rate": args.rate,
        "admission_burst": args.burst,
        "reconnect_window_s": args.window,
        "connect_all_s": round(connect_all, 2),
        "events_published": published,
        "deliveries_expected": published * args.clients,
        "delivered": totals.received - totals.duplicates,
        "lost": totals.lost,
        "duplicates": totals.duplicates,
        "resume_unavailable": totals.resume_unavailable,
        "told_429": totals.told_429,
        "told_1013": totals.told_1013,
        "closes": totals.closes,
        "connects_refused_by_a_stopped_worker": totals.refused_connects,
        "workers": per_worker,
        "restarts": restarts,
        "load_average": [round(load_start[0], 2), round(load_end[0], 2)],
        "client_loop_lag_max_s": round(LAG["max"], 2),
    }


def verdict(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """What failed, if anything."""
    problems = []
    if report["lost"] or report["duplicates"]:
        problems.append(f"{report['lost']} lost, {report['duplicates']} repeated")
    ceiling = args.rate * 1.2
    for name, worker in report["workers"].items():
        if worker["max_accepts_per_second"] > ceiling:
            problems.append(
                f"worker {name}: {worker['max_accepts_per_second']} accepts in one second "
                f"(rate {args.rate:g} x 1.2 = {ceiling:g})"
            )
    for phase in report["restarts"]:
        if phase["not_back"] or (phase["all_back_s"] or 0) > args.back_within:
            problems.append(
                f"restart of {phase['worker']}: {phase['not_back']} not back, the last after "
                f"{phase['all_back_s']} s (bound {args.back_within:g} s)"
            )
    return problems


@contextlib.contextmanager
def two_workers(args: argparse.Namespace, directory: Path) -> Iterator[list[Worker]]:
    workers = [Worker(name, free_port(), directory / f"{name}.log", args) for name in "ab"]
    try:
        for worker in workers:
            worker.start()
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def forget_stream(args: argparse.Namespace) -> None:
    """Delete the run's private stream and the keys beside it."""
    import redis

    client = redis.Redis.from_url(args.redis)
    try:
        keys = [args.stream, *client.scan_iter(match=f"{args.stream}:*", count=1000)]
        client.delete(*keys)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events-per-second", type=float, default=50.0)
    parser.add_argument("--rate", type=float, default=100.0, help="admission_rate per worker")
    parser.add_argument("--burst", type=int, default=10, help="admission_burst")
    parser.add_argument("--window", type=float, default=5.0, help="reconnect_window, seconds")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between phases")
    parser.add_argument(
        "--back-within",
        type=float,
        default=None,
        help="seconds from SIGTERM until every client must be back "
        "(default: 2 x window + 5, the documented bound)",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.redis, args.log, args.rate, args.burst, args.window)
        return 0
    if args.back_within is None:
        args.back_within = 2 * args.window + 5
    args.stream = f"livepanel-deploy-{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in args.redis else "?"
    args.stream_url = f"{args.redis}{separator}stream={args.stream}"
    raise_file_limit(4 * args.clients + 256)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="livepanel-deploy-") as directory:
        try:
            with two_workers(args, Path(directory)) as workers:
                report = asyncio.run(run(args, workers))
        finally:
            forget_stream(args)
    report["command"] = " ".join(["python", "benchmarks/deploy.py", *sys.argv[1:]])
    report["problems"] = verdict(report, args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
