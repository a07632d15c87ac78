"""The load client of ``benchmarks/fanout.py``: connections, frames, one run against a target.

One asyncio event loop holds the connections (asyncio protocols over raw
sockets and a hand-written frame parser, so that a message costs the client the
same whoever sent it). With ``--deflate`` each connection offers
permessage-deflate exactly as browsers do and inflates what the server
compressed. Above 2,000 connections (or with ``--client-procs K``) the
connections are split over K processes of this file (``--worker``), each on the
client's core: each opens its share, reports, receives, and hands back its
counts and latency samples, which the parent merges.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import gc
import json
import math
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the seq and publish time of every message, in any target's JSON spacing
MESSAGE = re.compile(rb'"seq": ?(\d+), ?"t": ?(\d+)')
# what every browser sends (RFC 7692 section 7.1.2.2: the client accepts any window size)
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
TAIL = b"\x00\x00\xff\xff"  # RFC 7692 section 7.2.2: appended before inflating
WORKER = str(Path(__file__).resolve())  # this file, run with --worker
PER_PROC = 2000  # connections per client process by default
FD_SPARE = 64  # descriptors a process needs besides its connections


@dataclass(frozen=True)
class Dial:
    """How a connection reaches the target and what it reads before it is ready."""

    port: int
    path: str
    protocol: str = "ws"  # "ws", "socketio" or "sse"
    ready_frames: int = 0
    deflate: bool = False


def client_frame(opcode: int, data: bytes) -> bytes:
    """A masked client frame (clients must mask, RFC 6455 5.3)."""
    mask = os.urandom(4)
    size = len(data)
    head = bytes([0x80 | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    else:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
    return head + mask + masked


def parse_deflate(headers: bytes) -> dict[str, str] | None:
    """The permessage-deflate parameters the server accepted, or None (not negotiated)."""
    for line in headers.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"sec-websocket-extensions":
            continue
        for extension in value.decode("latin-1").split(","):
            token, *params = (p.strip() for p in extension.split(";"))
            if token == "permessage-deflate":
                return {p.partition("=")[0]: p.partition("=")[2].strip('"') for p in params}
    return None


def raise_nofile(needed: int) -> int:
    """Raise RLIMIT_NOFILE to the hard limit; fail clearly when even that is below ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if ceiling < needed:
        raise SystemExit(
            f"this run needs {needed} open files in one process, but the hard limit "
            f"(RLIMIT_NOFILE) is {hard}: raise it (`ulimit -Hn`, LimitNOFILE= for a "
            "service, nofile in /etc/security/limits.conf, or docker --ulimit nofile=...) "
            "and run again"
        )
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        except (ValueError, OSError) as exc:
            raise SystemExit(f"could not raise RLIMIT_NOFILE to {ceiling}: {exc}") from exc
    return ceiling


@dataclass
class Run:
    """What every connection of one run (in one process) adds to."""

    clients: int
    events: int
    latencies: array.array[int] = field(default_factory=lambda: array.array("q"))
    finished: int = 0
    closed: int = 0
    last_arrival: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # one receive buffer for every connection of the run (one event loop, one thread):
    # asyncio's plain protocols recv() into a fresh 256 KiB bytes object per read, which
    # costs more than everything else the client does
    buffer: bytearray = field(default_factory=lambda: bytearray(1 << 18))

    def settle(self) -> None:
        if self.finished + self.closed >= self.clients:
            self.done.set()


class Client(asyncio.BufferedProtocol):
    """One WebSocket connection of the load client: parses frames, records messages."""

    def __init__(self, run: Run, dial: Dial) -> None:
        self.run = run
        offer = f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n" if dial.deflate else ""
        self.request = (
            f"GET {dial.path} HTTP/1.1\r\nHost: 127.0.0.1:{dial.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n{offer}\r\n"
        ).encode()
        self.sse = dial.protocol == "sse"
        if self.sse:  # the same endpoint, asked for its event stream
            self.request = (
                f"GET {dial.path} HTTP/1.1\r\nHost: 127.0.0.1:{dial.port}\r\n"
                "Accept: text/event-stream\r\n\r\n"
            ).encode()
        self.socketio = dial.protocol == "socketio"
        self.preamble = dial.ready_frames  # text frames before ready (livepanel's welcome)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.buffer = b""
        self.next_seq = 0
        self.received = 0
        self.duplicates = 0
        self.gaps = 0
        self.finished = False
        self.close_code: int | None = None
        self.lost_connection = False
        # bytes on the wire (whole frames: header and payload) of the benchmark's messages,
        # and of what came before them (livepanel's welcome, a state frame)
        self.wire = 0
        self.preamble_wire = 0
        # permessage-deflate, when the server accepted it: the inflater (None without)
        self.negotiated: dict[str, str] | None = None
        self.inflater: Any = None
        self.window_bits = 15
        self.takeover = True
        self.parts: list[bytes] = []  # a fragmented message's frames so far
        self.parts_bytes = 0  # and their bytes on the wire
        self.compressed = False  # the message being assembled has RSV1 set

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_connection = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost before ready: {exc}"))
        if not self.finished:
            self.finished = True
            self.run.closed += 1
            self.run.settle()

    def _ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def _handshake(self, data: bytes) -> bytes | None:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self.buffer = data
            return None
        status = data[: data.find(b"\r\n")]
        if (b" 200 " if self.sse else b" 101 ") not in status:
            assert self.transport is not None
            self.transport.abort()
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(status.decode("latin-1")))
            return None
        self.upgraded = True
        if not self.sse:
            self.negotiated = parse_deflate(bytes(data[:end]))
        if self.negotiated is not None:
            bits = self.negotiated.get("server_max_window_bits") or "15"
            self.window_bits = int(bits)
            self.takeover = "server_no_context_takeover" not in self.negotiated
            self.inflater = zlib.decompressobj(-self.window_bits)
        if not self.socketio and not self.preamble:
            self._ready()
        return data[end + 4 :]

    def _control(self, opcode: int, data: bytes) -> None:
        """The frames that are not benchmark messages: few, so readable beats fast."""
        assert self.transport is not None
        if opcode == 8:  # close
            self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
            self.transport.write(client_frame(8, data[:2]))
            self.transport.close()
        elif opcode == 9:  # ping
            self.transport.write(client_frame(10, data))
        elif opcode == 1 and self.socketio:
            if data == b"2":  # Engine.IO ping
                self.transport.write(client_frame(1, b"3"))
            elif data[:1] == b"0":  # Engine.IO open: join the default namespace
                self.transport.write(client_frame(1, b"40"))
            elif data[:2] == b"40":  # Socket.IO connected
                self._ready()
        elif opcode == 1 and self.preamble:
            self.preamble -= 1
            if not self.preamble:
                self._ready()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.run.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.run.buffer[:nbytes])

    def data_received(self, data: bytes | bytearray) -> None:
        now = time.monotonic_ns()
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        if not self.upgraded:
            rest = self._handshake(data)
            if rest is None:
                return
            data = rest
        if self.sse:
            self._stream(data, now)
            return
        if self.inflater is not None:
            self._frames_deflated(data, now)
            return
        size = len(data)
        i = 0
        special = self.socketio or self.preamble
        other = 0  # bytes of frames that are not benchmark messages
        while size - i >= 2:
            length = data[i + 1] & 127
            head = 2
            if length == 126:
                if size - i < 4:
                    break
                length = (data[i + 2] << 8) | data[i + 3]
                head = 4
            elif length == 127:
                if size - i < 10:
                    break
                length = int.from_bytes(data[i + 2 : i + 10], "big")
                head = 10
            end = i + head + length
            if end > size:
                break
            opcode = data[i] & 15
            if opcode > 2 or (special and not (self.socketio and data.startswith(b"42", i + head))):
                other += end - i
                if self.preamble:
                    self.preamble_wire += end - i
                self._control(opcode, data[i + head : end])
                special = self.socketio or self.preamble
            i = end
        if i < size:
            self.buffer = data[i:]
        self.wire += i - other
        self._count(MESSAGE.findall(data, 0, i), now)

    def _frames_deflated(self, data: bytes | bytearray, now: int) -> None:
        """Frames of a connection that negotiated permessage-deflate: a message whose first
        frame has RSV1 set is inflated (raw deflate, with 00 00 ff ff appended), in order,
        through one inflater for the connection unless the server takes no context over."""
        size = len(data)
        i = 0
        found: list[Any] = []
        while size - i >= 2:
            length = data[i + 1] & 127
            head = 2
            if length == 126:
                if size - i < 4:
                    break
                length = (data[i + 2] << 8) | data[i + 3]
                head = 4
            elif length == 127:
                if size - i < 10:
                    break
                length = int.from_bytes(data[i + 2 : i + 10], "big")
                head = 10
            end = i + head + length
            if end > size:
                break
            first = data[i]
            opcode = first & 15
            payload = bytes(data[i + head : end])
            frame_bytes = end - i
            i = end
            if opcode > 7:  # control frames are never compressed nor fragmented
                self._control(opcode, payload)
                continue
            if opcode:  # the first frame of a message
                self.parts = [payload]
                self.parts_bytes = frame_bytes
                self.compressed = bool(first & 0x40)
            else:
                self.parts.append(payload)
                self.parts_bytes += frame_bytes
            if not first & 0x80:  # more frames of this message follow
                continue
            message = b"".join(self.parts)
            self.parts = []
            if self.compressed:
                if not self.takeover:
                    self.inflater = zlib.decompressobj(-self.window_bits)
                message = self.inflater.decompress(message + TAIL)
            if self.preamble:
                self.preamble_wire += self.parts_bytes
                self._control(1, message)
            elif self.socketio and not message.startswith(b"42"):
                self._control(1, message)
            else:
                self.wire += self.parts_bytes
                found.extend(MESSAGE.findall(message))
        if i < size:
            self.buffer = bytes(data[i:])
        self._count(found, now)

    def _stream(self, data: bytes | bytearray, now: int) -> None:
        """An event stream: whole SSE messages end with a blank line (chunk sizes between
        them are left alone: the server writes whole messages in each chunk)."""
        end = data.rfind(b"\n\n") + 2
        if end < 2:
            self.buffer = bytes(data)
            return
        self.buffer = bytes(data[end:])
        if self.preamble and b"event: welcome" in data[:end]:
            self.preamble = 0
            self._ready()
        self.wire += end
        self._count(MESSAGE.findall(data, 0, end), now)

    def _count(self, found: list[Any], now: int) -> None:
        if not found:
            return
        run = self.run
        run.last_arrival = now
        seqs = [int(s) for s, _ in found]
        count = len(seqs)
        if seqs[0] == self.next_seq and seqs[-1] == self.next_seq + count - 1:
            self.next_seq += count
        else:
            for seq in seqs:
                if seq == self.next_seq:
                    self.next_seq += 1
                elif seq > self.next_seq:
                    self.gaps += seq - self.next_seq
                    self.next_seq = seq + 1
                else:
                    self.duplicates += 1
        self.received += count
        run.latencies.extend([now - int(t) for _, t in found])
        if self.next_seq >= run.events and not self.finished:
            self.finished = True
            run.finished += 1
            run.settle()


class Control:
    """The line protocol of ``targets/_common.py``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def ask(self, command: str, timeout: float = 30) -> dict[str, Any]:
        self.writer.write(command.encode() + b"\n")
        return await self.read(timeout)

    async def read(self, timeout: float) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise ConnectionError("the target closed its control port")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"target: {reply['error']}")
        return reply


# --------------------------------------------------------------------- one process's share


async def open_clients(run: Run, dial: Dial, count: int, rcvbuf: int | None = None) -> list[Client]:
    """Open ``count`` connections, 64 at a time, and wait until each is ready (welcomed).

    ``rcvbuf``: each socket's receive buffer in bytes, set before it connects (the
    TCP window follows it); the kernel's default without it.
    """
    loop = asyncio.get_running_loop()
    conns: list[Client] = []
    gate = asyncio.Semaphore(64)

    async def open_one() -> None:
        async with gate:
            if rcvbuf is None:
                _, client = await loop.create_connection(
                    lambda: Client(run, dial), "127.0.0.1", dial.port
                )
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, ("127.0.0.1", dial.port))
                except BaseException:
                    sock.close()
                    raise
                _, client = await loop.create_connection(lambda: Client(run, dial), sock=sock)
            conns.append(client)
            await asyncio.wait_for(client.ready, 30)

    try:
        await asyncio.wait_for(asyncio.gather(*(open_one() for _ in range(count))), 240)
    except BaseException:
        close_all(conns)
        raise
    return conns


STALLED_RCVBUF = 4096
"""A stalled connection's receive buffer: its window closes after a few KiB, as a frozen
browser tab's does once the kernel's buffers between it and the server are full."""


async def open_stalled(dial: Dial, count: int, events: int) -> list[Client]:
    """``count`` connections that stop reading once they are ready (welcomed): a client
    whose tab froze. What the server writes to them piles up in its own buffers."""
    conns = await open_clients(Run(count, events), dial, count, rcvbuf=STALLED_RCVBUF)
    for conn in conns:
        assert conn.transport is not None
        conn.transport.pause_reading()
    return conns


def close_all(conns: list[Client]) -> None:
    for conn in conns:
        if conn.transport is not None:
            conn.transport.abort()


def deadline_after(events: int, clients: int, rate: float) -> float:
    """How long a run may take, from ``go``, before what has not arrived counts as lost."""
    return 60 + events * clients / 5000 + (events / rate if rate else 0)


async def receive(
    run: Run, seconds: float, published: asyncio.Future[Any], stalled: bool = False
) -> None:
    """Until every connection has every event, or ``seconds`` pass, or the target has
    published everything and nothing came for 5 s (the rest is lost). With ``stalled``
    connections beside them, also once something came and then nothing for 5 s: the
    target may never finish publishing (its broadcast waits for a stalled client)."""
    deadline = time.monotonic() + seconds
    quiet = 5.0
    while not run.done.is_set() and time.monotonic() < deadline:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(run.done.wait(), 0.2)
        silent = time.monotonic_ns() - run.last_arrival > quiet * 1e9
        if silent and (published.done() or (stalled and run.last_arrival)):
            break


def tally(conns: list[Client], events: int) -> dict[str, Any]:
    """One process's counts (summed over its connections)."""
    return {
        "complete": sum(1 for c in conns if c.received - c.duplicates == events and not c.gaps),
        "delivered": sum(c.received - c.duplicates for c in conns),
        "duplicates": sum(c.duplicates for c in conns),
        "close_codes": sorted({c.close_code for c in conns if c.close_code is not None}),
        "wire_bytes": sum(c.wire for c in conns),
        "preamble_bytes": sum(c.preamble_wire for c in conns),
        "deflate_negotiated": sum(1 for c in conns if c.negotiated is not None),
        "deflate_params": next((c.negotiated for c in conns if c.negotiated is not None), None),
    }


def figures(
    clients: int,
    events: int,
    counts: dict[str, Any],
    latencies: list[int],
    started: int,
    published: int | None,
    last_arrival: int,
    stats: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> dict[str, Any]:
    """The row's figures from the merged counts, sorted latencies and the server's stats
    (``published`` is ``None`` when the target never finished publishing)."""
    before, idle, after = stats
    delivered = counts["delivered"]
    expected = clients * events
    elapsed = max(1, last_arrival - started) / 1e9
    n = len(latencies)

    def ms(q: float) -> float:
        return round(latencies[min(n - 1, int(q * n))] / 1e6, 3) if n else float("nan")

    client_cpu = counts["client_cpu_s"]
    return {
        "delivered": delivered,
        "expected": expected,
        "lost": expected - delivered,
        # connections that got every event, in order, no gap (all of them, or something is lost)
        "complete_connections": counts["complete"],
        "duplicates": counts["duplicates"],
        "closed_early": counts["closed"],
        "close_codes": counts["close_codes"],
        "seconds": round(elapsed, 4),
        "publish_seconds": None if published is None else round((published - started) / 1e9, 4),
        "msgs_per_s": round(delivered / elapsed, 1),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "max_ms": round(latencies[-1] / 1e6, 3) if n else float("nan"),
        "rss_base": before["rss"],
        "rss_idle": idle["rss"],
        "rss_per_conn": round((idle["rss"] - before["rss"]) / clients),
        "rss_peak": after["hwm"],
        # connections the server holds once the run is over (with --stalled: whether it let
        # the stalled ones go)
        "connections_after": after.get("connections"),
        "server_cpu_s": round(after["cpu"] - idle["cpu"], 3),
        "server_us_per_msg": round((after["cpu"] - idle["cpu"]) / max(1, delivered) * 1e6, 2),
        # how busy the server's core was from the first publish to the last arrival (at a
        # steady --rate: the cost of that load; at saturation: near 100 %)
        "server_cpu_pct": round(100 * (after["cpu"] - idle["cpu"]) / elapsed, 1),
        "server_nofile": idle.get("nofile"),
        "client_cpu_s": round(client_cpu, 3),
        "client_busy": round(client_cpu / elapsed, 2),
        "connect_s": round(counts["connect_s"], 3),
        "server_gc": [b - a for a, b in zip(idle.get("gc", []), after.get("gc", []), strict=False)],
        # permessage-deflate: how many connections the server accepted it on, with what
        "deflate": counts["deflate_negotiated"] == clients,
        "deflate_connections": counts["deflate_negotiated"],
        "deflate_params": counts["deflate_params"],
        # whole frames (header + payload) carrying the messages, per delivered message
        "wire_bytes": counts["wire_bytes"],
        "wire_bytes_per_msg": round(counts["wire_bytes"] / max(1, delivered), 1),
        # what each connection got before the first message (welcome, a state frame)
        "preamble_bytes_per_conn": round(counts["preamble_bytes"] / clients, 1),
    }


# --------------------------------------------------------------------- one run


def default_procs(clients: int) -> int:
    """One client process up to 2,000 connections, one more per 2,000 above."""
    return max(1, math.ceil(clients / PER_PROC))


def shares(clients: int, procs: int) -> list[int]:
    """``clients`` split over ``procs`` processes as evenly as possible."""
    base, extra = divmod(clients, procs)
    return [base + (1 if k < extra else 0) for k in range(procs)]


async def drive(
    dial: Dial,
    clients: int,
    events: int,
    control_port: int,
    rate: float = 0.0,
    procs: int = 1,
    stalled: int = 0,
) -> dict[str, Any]:
    """Connect, broadcast, measure: one run against a started target.

    ``rate``: events per second the target publishes (0: one per event-loop turn,
    as fast as it can: saturation). ``procs`` > 1 splits the connections over that
    many worker processes (each on this process's core). ``stalled``: that many more
    connections stop reading once welcomed (:func:`open_stalled`; one process only);
    the figures are the ``clients`` others'.
    """
    if stalled and procs > 1:
        raise ValueError("stalled connections need the load client in one process")
    control = Control(*await asyncio.open_connection("127.0.0.1", control_port))
    try:
        before = await control.ask("stats")
        if procs > 1:
            return await _drive_procs(dial, clients, events, control, before, rate, procs)
        return await _drive_here(dial, clients, events, control, before, rate, stalled)
    finally:
        with contextlib.suppress(Exception):
            control.writer.close()


async def _drive_here(
    dial: Dial,
    clients: int,
    events: int,
    control: Control,
    before: dict[str, Any],
    rate: float,
    stalled: int = 0,
) -> dict[str, Any]:
    run = Run(clients, events)
    began = time.monotonic()
    conns = await open_clients(run, dial, clients)
    stuck: list[Client] = []  # the stalled ones: not counted
    try:
        stuck = await open_stalled(dial, stalled, events) if stalled else []
        connect_seconds = time.monotonic() - began
        await asyncio.sleep(0.5)  # let the server settle before reading its idle RSS
        idle = await control.ask("stats")
        perf = None
        if os.environ.get("BENCH_PERF"):  # BENCH_PERF=path: sample the server with perf
            command = ["perf", "record", "-e", "cpu-clock", "-g", "-p", str(idle["pid"])]
            perf = subprocess.Popen(  # noqa: ASYNC220 - starts at once, runs beside the run
                [*command, "-o", os.environ["BENCH_PERF"]],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(0.5)
        gc.collect()
        gc.disable()  # the client's own pauses would show up as server latency
        cpu_before = time.process_time()
        everyone = clients + stalled
        started = (await control.ask(f"go {everyone} {events} {rate}", 90))["started"]
        published_task = asyncio.ensure_future(control.read(600))
        await receive(run, deadline_after(events, clients, rate), published_task, bool(stalled))
        client_cpu = time.process_time() - cpu_before
        gc.enable()
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            await asyncio.to_thread(perf.wait, 30)
        if stalled:
            await asyncio.wait({published_task}, timeout=5)
        if stalled and not published_task.done():
            # the target's publisher waits for a stalled client (and so does its control
            # connection): what it published is unknown; its stats come over a new one
            published_task.cancel()
            published = None
            after = await _stats_aside(control)
        else:
            published = (await asyncio.wait_for(published_task, 60))["published"]
            await control.ask("stop", 120)  # ends the server's profile with BENCH_PROFILE
            after = await control.ask("stats")
    finally:
        close_all(conns + stuck)
    counts = tally(conns, events)
    counts.update(closed=run.closed, client_cpu_s=client_cpu, connect_s=connect_seconds)
    latencies = sorted(run.latencies)
    stats = (before, idle, after)
    return figures(
        clients, events, counts, latencies, started, published, run.last_arrival, stats
    ) | {"client_procs": 1, "stalled": stalled}


async def _stats_aside(control: Control) -> dict[str, Any]:
    """The target's stats over a connection of their own (``control``'s is busy)."""
    host, port = control.writer.get_extra_info("peername")[:2]
    aside = Control(*await asyncio.open_connection(host, port))
    try:
        return await aside.ask("stats")
    finally:
        aside.writer.close()


class Worker:
    """One client process, seen from the parent: its pipes, by lines of JSON."""

    def __init__(self, process: asyncio.subprocess.Process, log: Any) -> None:
        self.process = process
        self.log = log

    async def read(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            self.log.seek(0)
            tail = self.log.read()[-1500:].decode(errors="replace")
            raise RuntimeError(f"a client process exited: {tail}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"client process: {reply['error']}")
        return reply

    def tell(self, word: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word.encode() + b"\n")

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.process.wait(), 10)
        self.log.close()


async def _drive_procs(
    dial: Dial,
    clients: int,
    events: int,
    control: Control,
    before: dict[str, Any],
    rate: float,
    procs: int,
) -> dict[str, Any]:
    workers: list[Worker] = []
    try:
        for share in shares(clients, procs):
            args = {"dial": dial.__dict__, "clients": share, "events": events}
            args["seconds"] = deadline_after(events, clients, rate)
            log = tempfile.TemporaryFile()  # noqa: SIM115 - Worker.stop closes it
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                WORKER,
                "--worker",
                json.dumps(args),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                limit=1 << 30,  # the results line carries every latency sample
            )
            workers.append(Worker(process, log))
        opened = await asyncio.gather(*(w.read(300) for w in workers))
        connect_seconds = (max(o["opened"] for o in opened) - min(o["began"] for o in opened)) / 1e9
        await asyncio.sleep(0.5)  # let the server settle before reading its idle RSS
        idle = await control.ask("stats")
        for w in workers:
            w.tell("go")
        await asyncio.gather(*(w.read(30) for w in workers))  # each has its clock running
        started = (await control.ask(f"go {clients} {events} {rate}", 90))["started"]
        published = (await control.read(600 + deadline_after(events, clients, rate)))["published"]
        for w in workers:
            w.tell("published")
        results = await asyncio.gather(
            *(w.read(deadline_after(events, clients, rate) + 30) for w in workers)
        )
        await control.ask("stop", 120)
        after = await control.ask("stats")
    finally:
        for w in workers:
            await w.stop()
    counts: dict[str, Any] = {"connect_s": connect_seconds, "close_codes": [], "client_cpu_s": 0}
    latencies: list[int] = []
    for result in results:
        for key in (
            "delivered",
            "complete",
            "duplicates",
            "closed",
            "wire_bytes",
            "preamble_bytes",
        ):
            counts[key] = counts.get(key, 0) + result[key]
        counts["deflate_negotiated"] = (
            counts.get("deflate_negotiated", 0) + result["deflate_negotiated"]
        )
        counts["deflate_params"] = counts.get("deflate_params") or result["deflate_params"]
        counts["close_codes"] = sorted({*counts["close_codes"], *result["close_codes"]})
        counts["client_cpu_s"] += result["client_cpu_s"]
        samples = array.array("q")
        samples.frombytes(base64.b64decode(result["latencies"]))
        latencies.extend(samples)
    latencies.sort()
    last_arrival = max(r["last_arrival"] for r in results)
    stats = (before, idle, after)
    row = figures(clients, events, counts, latencies, started, published, last_arrival, stats)
    row["client_procs"] = procs
    row["client_connect_s"] = [round(o["connect_s"], 3) for o in opened]
    return row


# --------------------------------------------------------------------- a worker process


async def work(args: dict[str, Any]) -> None:
    """A client process: open a share of the connections, receive, report (JSON lines)."""
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)

    def say(reply: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    dial = Dial(**args["dial"])
    run = Run(args["clients"], args["events"])
    began = time.monotonic_ns()
    try:
        conns = await open_clients(run, dial, args["clients"])
    except Exception as exc:
        say({"error": f"{type(exc).__name__}: {exc}"})
        return
    try:
        opened = time.monotonic_ns()
        say({"began": began, "opened": opened, "connect_s": (opened - began) / 1e9})
        if (await asyncio.wait_for(commands.readline(), 300)).strip() != b"go":
            return
        gc.collect()
        gc.disable()  # the client's own pauses would show up as server latency
        cpu_before = time.process_time()
        say({"measuring": True})
        published = asyncio.ensure_future(commands.readline())
        await receive(run, args["seconds"], published)
        client_cpu = time.process_time() - cpu_before
        gc.enable()
        published.cancel()
        result = tally(conns, args["events"])
        result.update(
            closed=run.closed,
            client_cpu_s=client_cpu,
            last_arrival=run.last_arrival,
            latencies=base64.b64encode(run.latencies.tobytes()).decode(),
        )
        say(result)
    finally:
        close_all(conns)


def worker_main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    raise_nofile(args["clients"] + FD_SPARE)
    asyncio.run(work(args))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["--worker"]:
        raise SystemExit("run benchmarks/fanout.py; this file is its load client")
    sys.exit(worker_main(sys.argv[2:]))
