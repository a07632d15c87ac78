"""Fan-out benchmark: livepanel against its peers, one load client for all of them.

Each target (``benchmarks/targets/``) is a small server run as a subprocess,
pinned to one core with ``taskset``; this process, pinned to another core, is
the load client. It opens N WebSocket connections on 127.0.0.1 with its own
minimal client (asyncio protocols and a hand-written frame parser, so that a
message costs it the same whoever sent it; it speaks Engine.IO/Socket.IO
framing itself for python-socketio), then asks the server, over a control
port, to broadcast M events of about 200 bytes as fast as it can (one event per
event-loop turn). Every frame carries its sequence number and its publish time
(``time.monotonic_ns()``, one clock for both processes), so the client measures
throughput, publish-to-receive latency and loss; the server reports its RSS
(idle with N connections, and peak) and CPU time. The client itself is in
``fanout_client.py``: with ``--deflate`` it offers permessage-deflate as
browsers do; above 2,000 connections (or with ``--client-procs K``) it runs as
K processes on its core. Both this process and the targets raise their limit
on open files to the hard limit (too low a hard limit fails before any run).

    python benchmarks/fanout.py                    # the full matrix (about 15 minutes)
    python benchmarks/fanout.py --smoke            # every target, tiny N and M, zero loss
    python benchmarks/fanout.py --targets livepanel,websockets --clients 1000 --events 1000
    python benchmarks/fanout.py --plot docs/img/benchmarks.png --report benchmarks/results/x.json
    python benchmarks/fanout.py --deflate --targets livepanel,websockets --clients 500 --rate 20
    python benchmarks/fanout.py --targets livepanel --clients 10000 --events 200 --rate 20

Results go to ``benchmarks/results/`` (JSON and markdown). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the load client, beside this file, run as a script or imported

from fanout_client import FD_SPARE, Dial, default_procs, drive, raise_nofile  # noqa: E402

TARGETS_DIR = HERE / "targets"
RESULTS_DIR = HERE / "results"
REFERENCE = "websockets"

# --------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Spec:
    """One row of the table: a server script, how to reach it and what it needs."""

    name: str
    label: str
    script: str
    path: str = "/"
    server: str | None = None  # BENCH_SERVER for ASGI targets
    protocol: str = "ws"  # "ws", "socketio" or "sse" (an event stream, no WebSocket)
    ready_frames: int = 0  # text frames to read before the connection counts as ready
    redis: bool = False
    needs: tuple[str, ...] = ()  # importable modules (and "redis-server")
    extra: bool = False  # only with --targets: what each ASGI server costs by itself
    events_scale: float = 1.0  # the slowest peers broadcast fewer events, to bound the run
    src: Path | None = None  # another livepanel source tree (--compare), else --src
    env: tuple[tuple[str, str], ...] = ()  # more environment for the target

    def missing(self) -> list[str]:
        absent = [m for m in self.needs if m != "redis-server" and not _importable(m)]
        if "redis-server" in self.needs and shutil.which("redis-server") is None:
            absent.append("redis-server")
        return absent


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


_LP = ("uvicorn",)
SPECS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        Spec("websockets", "websockets.broadcast() (reference)", "websockets_broadcast.py"),
        Spec(
            "livepanel",
            "livepanel, uvicorn",
            "livepanel_app.py",
            "/",
            "uvicorn",
            ready_frames=1,
            needs=_LP,
        ),
        Spec(
            "livepanel-batch",
            "livepanel ?batch=1, uvicorn",
            "livepanel_app.py",
            "/?batch=1",
            "uvicorn",
            ready_frames=1,
            needs=_LP,
        ),
        Spec(
            "livepanel-sse",
            "livepanel Server-Sent Events, uvicorn",
            "livepanel_app.py",
            "/",
            "uvicorn",
            protocol="sse",
            ready_frames=1,
            needs=_LP,
            extra=True,  # run it with --targets, beside "livepanel"
        ),
        Spec(
            "livepanel-audiences",
            "livepanel, 10 audience groups, uvicorn",
            "livepanel_app.py",
            "/",
            "uvicorn",
            ready_frames=1,
            needs=_LP,
            extra=True,  # run it with --targets, beside "livepanel"
            env=(("BENCH_AUDIENCE_GROUPS", "10"),),
        ),
        Spec(
            "livepanel-state",
            "livepanel ?state=1 (1,000 entries), uvicorn",
            "livepanel_app.py",
            "/?state=1",
            "uvicorn",
            ready_frames=2,  # the welcome, then the state frame (its bytes: preamble_bytes)
            needs=_LP,
            extra=True,  # run it with --targets, beside "livepanel"
            env=(("BENCH_STATE_ENTRIES", "1000"),),
        ),
        Spec(
            "livepanel-wsproto",
            "livepanel, uvicorn ws=wsproto",
            "livepanel_app.py",
            "/",
            "uvicorn-wsproto",
            ready_frames=1,
            needs=_LP,
        ),
        Spec(
            "livepanel-websockets",
            "livepanel, uvicorn ws=websockets (legacy)",
            "livepanel_app.py",
            "/",
            "uvicorn-websockets",
            ready_frames=1,
            needs=_LP,
            extra=True,  # uvicorn deprecates it; run it with --targets
        ),
        Spec(
            "livepanel-hypercorn",
            "livepanel, hypercorn",
            "livepanel_app.py",
            "/",
            "hypercorn",
            ready_frames=1,
            needs=("hypercorn",),
        ),
        Spec(
            "livepanel-granian",
            "livepanel, granian",
            "livepanel_app.py",
            "/",
            "granian",
            ready_frames=1,
            needs=("granian",),
        ),
        Spec(
            "livepanel-redis",
            "livepanel on Redis, uvicorn",
            "livepanel_app.py",
            "/",
            "uvicorn",
            ready_frames=1,
            redis=True,
            needs=(*_LP, "redis", "redis-server"),
        ),
        Spec(
            "asgi-bare",
            "bare ASGI loop of sends, uvicorn",
            "asgi_bare.py",
            "/",
            "uvicorn",
            needs=_LP,
        ),
        *(
            Spec(
                f"asgi-bare-{server.removeprefix('uvicorn-')}",
                f"bare ASGI loop of sends, {server.replace('-', ' ws=')}",
                "asgi_bare.py",
                "/",
                server,
                needs=(server.partition("-")[0],),
                extra=True,
            )
            for server in ("uvicorn-wsproto", "uvicorn-websockets", "hypercorn", "granian")
        ),
        Spec(
            "fastapi-manager",
            "FastAPI docs ConnectionManager, uvicorn",
            "fastapi_manager.py",
            "/ws",
            "uvicorn",
            needs=(*_LP, "fastapi"),
        ),
        Spec(
            "starlette-broadcaster",
            "Starlette + broadcaster (memory://), uvicorn",
            "starlette_broadcaster.py",
            "/ws",
            "uvicorn",
            needs=(*_LP, "starlette", "broadcaster"),
            events_scale=0.5,
        ),
        Spec(
            "socketio",
            "python-socketio AsyncServer, uvicorn",
            "socketio_app.py",
            "/socket.io/?EIO=4&transport=websocket",
            "uvicorn",
            protocol="socketio",
            needs=(*_LP, "socketio"),
            events_scale=0.25,
        ),
    )
}

# peers whose version the report records, by distribution name
VERSIONED = (
    "livepanel",
    "websockets",
    "uvicorn",
    "wsproto",
    "hypercorn",
    "granian",
    "starlette",
    "fastapi",
    "broadcaster",
    "python-socketio",
    "python-engineio",
    "redis",
)


# --------------------------------------------------------------------- processes


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every socket stays bound until all are chosen."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the target exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def pinned(cpu: int | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


@contextlib.contextmanager
def private_redis(cpu: int | None) -> Iterator[str]:
    """A throwaway redis-server on a free port (no persistence), never the one on 6379."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        args = [*pinned(cpu), binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder]
        args += ["--save", "", "--appendonly", "no", "--logfile", os.path.join(folder, "log")]
        process = subprocess.Popen(args)
        try:
            wait_listening(port, process)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()
            process.wait()


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a target and everything it started: SIGTERM to its process group, then SIGKILL."""
    group = process.pid  # start_new_session: the group's id is the target's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)  # the target's own workers, should they linger
    process.wait()


def run_target(
    spec: Spec, clients: int, events: int, options: argparse.Namespace
) -> dict[str, Any]:
    """Start the target, drive one run, stop it; a failure becomes an ``error`` row.

    A target that dies before listening (another process took its port between our
    choice and its bind) is started once more on new ports.
    """
    row = _run_target_once(spec, clients, events, options)
    if str(row.get("error", "")).endswith("before listening"):
        row = _run_target_once(spec, clients, events, options)
    return row


def _run_target_once(
    spec: Spec, clients: int, events: int, options: argparse.Namespace
) -> dict[str, Any]:
    port, control_port = free_ports(2)
    env = dict(os.environ)
    env.update(
        BENCH_PORT=str(port),
        BENCH_CONTROL_PORT=str(control_port),
        BENCH_SERVER=spec.server or "",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(spec.src or options.src), env.get("PYTHONPATH", "")]),
    )
    env.update(spec.env)
    if options.deflate:  # a target whose server turns compression off by default turns it on
        env["BENCH_DEFLATE"] = "1"
    if spec.redis:
        env["BENCH_BACKEND"] = f"{options.redis_url}?stream=bench:{uuid.uuid4().hex[:8]}"
    command = [*pinned(options.server_cpu), sys.executable, str(TARGETS_DIR / spec.script)]
    row: dict[str, Any] = {"target": spec.name, "clients": clients, "events": events}
    row["deflate_offered"] = options.deflate
    with tempfile.TemporaryFile() as log:
        # a session of its own, so that stopping it stops its workers too (granian forks one)
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=log, cwd=TARGETS_DIR, start_new_session=True
        )
        try:
            wait_listening(control_port, process)
            wait_listening(port, process)
            dial = Dial(port, spec.path, spec.protocol, spec.ready_frames, options.deflate)
            procs = options.client_procs or default_procs(clients)
            if spec.protocol == "sse":
                dial = dataclasses.replace(dial, deflate=False)  # no WebSocket, no extension
            driving = drive(
                dial, clients, events, control_port, options.rate, procs, options.stalled
            )
            row.update(asyncio.run(driving))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            stop(process)
            if "error" in row:
                log.seek(0)
                row["log"] = log.read()[-2000:].decode(errors="replace")
    return row


# --------------------------------------------------------------------- the matrix

# (N, M, runs): 5,000 connections cost seconds to open, so that size runs twice, not three times
FULL_MATRIX = ((100, 500, 3), (1000, 200, 3), (5000, 40, 2))
SMOKE_MATRIX = ((20, 40, 1),)


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": platform.python_version()}
    for name in VERSIONED:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    binary = shutil.which("redis-server")
    if binary:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        match = re.search(r"v=(\S+)", out)
        found["redis-server"] = match.group(1) if match else out.strip()
    return found


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians (and spread) per target and N; ratios to the reference at the same N."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["target"], row["clients"]), []).append(row)
    summary: list[dict[str, Any]] = []
    for (name, clients), runs in groups.items():
        good = [r for r in runs if "error" not in r]
        entry: dict[str, Any] = {"target": name, "clients": clients, "runs": len(runs)}
        entry["events"] = runs[0]["events"]
        entry["errors"] = [r["error"] for r in runs if "error" in r]
        for key in (
            "msgs_per_s",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "rss_per_conn",
            "rss_peak",
            "server_cpu_s",
            "server_us_per_msg",
            "server_cpu_pct",
            "client_cpu_s",
            "client_busy",
            "seconds",
            "connect_s",
            "wire_bytes_per_msg",
            "preamble_bytes_per_conn",
        ):
            values = [r[key] for r in good]
            if values:
                entry[key] = statistics.median(values)
                entry[key + "_range"] = [min(values), max(values)]
        entry["deflate"] = bool(good) and all(r.get("deflate") for r in good)
        entry["lost"] = sum(r["lost"] for r in good)
        entry["expected"] = sum(r["expected"] for r in good)
        summary.append(entry)
    for entry in summary:
        ref = next(
            (
                e
                for e in summary
                if e["target"] == REFERENCE
                and e["clients"] == entry["clients"]
                and "msgs_per_s" in e
            ),
            None,
        )
        if ref and "msgs_per_s" in entry:
            entry["x_throughput"] = round(entry["msgs_per_s"] / ref["msgs_per_s"], 2)
            entry["x_p99"] = round(entry["p99_ms"] / ref["p99_ms"], 2) if ref["p99_ms"] else None
    order = list(SPECS)
    summary.sort(key=lambda e: (e["clients"], order.index(e["target"])))
    return summary


def markdown(summary: list[dict[str, Any]]) -> str:
    """The results table: medians, with the spread of throughput and p99 over the repeats."""
    lines = [
        "| target | N | M | runs | msg/s: median (min-max) | x ref | p50 ms "
        "| p99 ms: median (min-max) | x ref | max ms | lost | peak RSS MB "
        "| RSS per idle conn KB | server CPU µs/msg | client CPU s (busy) | wire B/msg "
        "| connect s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in summary:
        label = SPECS[e["target"]].label + (" (deflate)" if e.get("deflate") else "")
        if "msgs_per_s" not in e:
            lines.append(
                f"| {label} | {e['clients']} | {e['events']} | {e['runs']} "
                f"| failed: {e['errors'][:1]} |" + " |" * 12
            )
            continue
        lo, hi = e["msgs_per_s_range"]
        p99_lo, p99_hi = e["p99_ms_range"]
        lines.append(
            f"| {label} | {e['clients']} | {e['events']} | {e['runs']} | {e['msgs_per_s']:,.0f} "
            f"({lo:,.0f}-{hi:,.0f}) | {e.get('x_throughput', '')} | {e['p50_ms']:.1f} "
            f"| {e['p99_ms']:.1f} ({p99_lo:.0f}-{p99_hi:.0f}) | {e.get('x_p99', '')} "
            f"| {e['max_ms']:.0f} | {e['lost']} | {e['rss_peak'] / 2**20:.0f} "
            f"| {e['rss_per_conn'] / 1024:.1f} | {e['server_us_per_msg']:.1f} "
            f"| {e['client_cpu_s']:.1f} ({e['client_busy']:.0%}) "
            f"| {e.get('wire_bytes_per_msg', float('nan')):.0f} "
            f"| {e.get('connect_s', float('nan')):.1f} |"
        )
    return "\n".join(lines)


# one colour per target: black for the reference, warm for livepanel, cool for the peers
COLOURS = {
    "websockets": "#000000",
    "livepanel": "#d62728",
    "livepanel-batch": "#ff7f0e",
    "livepanel-wsproto": "#e377c2",
    "livepanel-websockets": "#8c564b",
    "livepanel-hypercorn": "#bcbd22",
    "livepanel-granian": "#9467bd",
    "livepanel-redis": "#f7b6d2",
    "asgi-bare": "#7f7f7f",
    "fastapi-manager": "#1f77b4",
    "starlette-broadcaster": "#17becf",
    "socketio": "#2ca02c",
}


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """Throughput and p99 against N, one line per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6.2))
    for name, spec in SPECS.items():
        points = sorted(
            (e["clients"], e) for e in summary if e["target"] == name and "msgs_per_s" in e
        )
        if not points:
            continue
        xs = [p[0] for p in points]
        style: dict[str, Any] = {
            "color": COLOURS.get(name),
            "marker": "o",
            "label": spec.label,
            "linewidth": 2.8 if name in (REFERENCE, "livepanel", "livepanel-batch") else 1.4,
            "linestyle": "-" if name.startswith("livepanel") or name == REFERENCE else "--",
        }
        left.plot(xs, [p[1]["msgs_per_s"] for p in points], **style)
        right.plot(xs, [p[1]["p99_ms"] for p in points], **style)
    titles = ("delivered messages per second (median)", "p99 publish-to-receive, ms (median)")
    for axis, title in zip((left, right), titles, strict=True):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("connections (N)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("livepanel fan-out vs peers, 127.0.0.1, server and load client on one core each")
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every target, tiny N and M")
    parser.add_argument(
        "--targets", help="comma-separated names (default: all): " + ",".join(SPECS)
    )
    parser.add_argument("--clients", type=int, nargs="*", help="N values (with --events)")
    parser.add_argument("--events", type=int, nargs="*", help="M per N value")
    parser.add_argument("--repeat", type=int, help="runs per target and N (full matrix: 3, 3, 2)")
    parser.add_argument("--server-cpu", type=int, default=0, help="core for servers (0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="core for this client (1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    parser.add_argument("--jobs", type=int, help="targets run at once (smoke: 3, else 1)")
    parser.add_argument("--json", type=Path, help="write results here (default: results/)")
    parser.add_argument("--plot", type=Path, help="write the PNG plot here")
    parser.add_argument("--report", type=Path, help="re-render table and plot from a JSON file")
    parser.add_argument(
        "--src",
        type=Path,
        default=HERE.parent / "src",
        help="the livepanel source tree the targets import (to compare two versions)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        help="another livepanel source tree (e.g. a worktree of main): its livepanel targets "
        "run in the same matrix as '<name>@before', for before/after tables in one run",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events per second each target publishes (default 0: one per event-loop turn, "
        "as fast as it can); a rate below saturation measures latency under a steady load",
    )
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="clients offer permessage-deflate as browsers do (client_max_window_bits) and "
        "inflate what the server compresses; rows record whether it was negotiated and the "
        "bytes on the wire per message",
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        help="load client processes sharing the client's core (default: 1 up to 2,000 "
        "connections, one more per 2,000 above); each opens its share and reports",
    )
    parser.add_argument(
        "--stalled",
        type=int,
        default=0,
        help="this many more connections stop reading once welcomed (a frozen tab): the "
        "others' figures show whether a broadcast waits for a stalled client; the run "
        "ends 5 s after the last arrival, and what the others lost is a result, not a failure",
    )
    options = parser.parse_args()

    if options.report:
        data = json.loads(options.report.read_text())
        print(markdown(data["summary"]))
        if options.plot:
            plot(data["summary"], options.plot)
        return 0

    jobs = options.jobs or (3 if options.smoke else 1)
    if jobs > 1:
        options.no_pin = True  # runs side by side: pinning them would only make them queue
    if options.no_pin or not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        options.server_cpu = options.client_cpu = None
    else:
        os.sched_setaffinity(0, {options.client_cpu})

    names = (
        options.targets.split(",") if options.targets else [n for n in SPECS if not SPECS[n].extra]
    )
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        parser.error(f"unknown targets {unknown}; expected some of {', '.join(SPECS)}")
    if options.smoke:
        matrix: tuple[tuple[int, int, int], ...] = SMOKE_MATRIX
    elif options.clients:
        events = options.events or [1000] * len(options.clients)
        repeat = options.repeat or 3
        matrix = tuple((n, m, repeat) for n, m in zip(options.clients, events, strict=True))
    else:
        matrix = tuple((n, m, options.repeat or runs) for n, m, runs in FULL_MATRIX)

    if options.client_procs is not None and options.client_procs < 1:
        parser.error("--client-procs must be at least 1")
    if options.stalled < 0:
        parser.error("--stalled must not be negative")
    if options.stalled and (
        (options.client_procs or 1) > 1 or max(default_procs(n) for n, _, _ in matrix) > 1
    ):
        parser.error("--stalled needs the load client in one process (at most 2,000 clients)")
    # every target inherits this process's limit on open files: a server holds N sockets
    # in one process, so the hard limit must allow N (and the client's share) plus a few
    raise_nofile(max(n for n, _, _ in matrix) + options.stalled + FD_SPARE)

    require = os.environ.get("LIVEPANEL_REQUIRE_BENCH") == "1"
    specs = [SPECS[n] for n in names]
    if options.compare:
        before = [
            dataclasses.replace(
                s,
                name=f"{s.name}@before",
                label=f"{s.label} (before)",
                src=options.compare.resolve(),
            )
            for s in specs
            if s.name.startswith("livepanel")
        ]
        SPECS.update((s.name, s) for s in before)  # the table and the summary look names up
        specs = [*specs, *before]
    missing = {s.name: s.missing() for s in specs if s.missing()}
    for name, absent in missing.items():
        print(f"{name}: not installed ({', '.join(absent)})", file=sys.stderr)
    specs = [s for s in specs if s.name not in missing]

    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        options.redis_url = None
        if any(s.redis for s in specs):
            options.redis_url = stack.enter_context(private_redis(options.server_cpu))
        plan = [
            (spec, clients, events, repeat)
            for clients, events, runs in matrix
            for repeat in range(runs)
            # alternate the order between repeats, so that no target always runs first
            for spec in specs[repeat % len(specs) :] + specs[: repeat % len(specs)]
        ]

        def one(step: tuple[Spec, int, int, int]) -> dict[str, Any]:
            spec, clients, events, repeat = step
            if not options.smoke:
                events = max(1, round(events * spec.events_scale))
            row = run_target(spec, clients, events, options)
            row["repeat"] = repeat
            shown = row.get("error") or (
                f"{row['msgs_per_s']:>10,.0f} msg/s  p99 {row['p99_ms']:8.1f} ms  "
                f"lost {row['lost']}  rss/conn {row['rss_per_conn'] / 1024:.1f} KB  "
                f"cpu srv {row['server_cpu_s']:.2f} s cli {row['client_cpu_s']:.2f} s  "
                f"wire {row['wire_bytes_per_msg']:.0f} B/msg{' deflate' if row['deflate'] else ''}"
                f"  connect {row['connect_s']:.1f} s  srv {row['server_cpu_pct']:.0f}%"
                f"  preamble {row['preamble_bytes_per_conn']:.0f} B/conn"
            )
            print(f"N={clients:<5} M={events:<5} {spec.name:<22} {shown}", flush=True)
            return row

        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            rows.extend(pool.map(one, plan))
    summary = summarize(rows)
    data = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": round(time.monotonic() - began, 1),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "pinned": {"server": options.server_cpu, "client": options.client_cpu},
        "machine": platform.platform(),
        "versions": versions(),
        "missing": missing,
        "rate": options.rate,
        "deflate_offered": options.deflate,
        "client_procs": options.client_procs,
        "stalled": options.stalled,
        "rows": rows,
        "summary": summary,
    }
    path = options.json
    if path is None:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = (
            RESULTS_DIR
            / f"fanout-{'smoke-' if options.smoke else ''}{time.strftime('%Y%m%d-%H%M%S')}.json"
        )
    path.write_text(json.dumps(data, indent=1))
    table = markdown(summary)
    pace = f"{options.rate:g} events/s" if options.rate else "one event per event-loop turn"
    print(f"\n{table}\n\npublished at {pace}; results: {path} ({data['duration_s']} s)")
    print(f"load average: {load_before} before, {data['load_after']} after")
    if options.plot:
        plot(summary, options.plot)
        print(f"plot: {options.plot}")

    # beside stalled connections, what the others lost is what the run measures
    failed = [r for r in rows if "error" in r or (r.get("lost") and not options.stalled)]
    if failed or (require and missing):
        for row in failed:
            problem = row.get("error") or f"{row['lost']} lost"
            print(f"FAILED {row['target']} N={row['clients']}: {problem}", file=sys.stderr)
        if require and missing:
            print(f"FAILED: LIVEPANEL_REQUIRE_BENCH=1 and missing {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
