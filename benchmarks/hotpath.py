"""livepanel's own cost per delivered message, without sockets: the hot path in isolation.

N connections of ``LivePanelApp`` are driven in-process by an ASGI "server"
whose ``send`` does nothing, and M events are published one per event-loop
turn, as ``fanout.py`` does. What is left is what livepanel adds to the ASGI
server's own cost (compare the ``bare`` line: an ASGI app awaiting each
``send`` in turn). No network means little noise: the minimum over a few runs
is a stable figure on a busy machine, good for comparing two versions.

    python benchmarks/hotpath.py                        # N=1000, M=200, best of 5
    python benchmarks/hotpath.py --batch                # connections with ?batch=1
    python benchmarks/hotpath.py --src /tmp/old/src     # another livepanel tree
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


async def measure_livepanel(clients: int, events: int, batch: bool, steady: bool = False) -> float:
    """CPU seconds per delivered message through LivePanelApp."""
    from livepanel import Broadcaster, LivePanelApp, event_type
    from livepanel.events import registered_types

    if "bench.tick" not in registered_types():

        @event_type("bench.tick")
        class BenchTick:
            seq: int
            t: int
            pad: str

    logging.getLogger("livepanel").setLevel(logging.ERROR)  # auth=None warns
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=None, client_rate=None)
    sent = 0
    gone = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        nonlocal sent
        sent += 1

    def connection() -> Any:
        connected = False

        async def receive() -> dict[str, Any]:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            await gone.wait()
            return {"type": "websocket.disconnect", "code": 1000}

        scope = {
            "type": "websocket",
            "path": "/",
            "query_string": b"batch=1" if batch else b"",
            "headers": [],
            "scheme": "ws",
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "extensions": {},
        }
        return app(scope, receive, send)  # type: ignore[arg-type]

    tasks = [asyncio.ensure_future(connection()) for _ in range(clients)]
    while broadcaster.connection_count < clients:  # noqa: ASYNC110 - a count, not an event
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    payload = {"seq": 0, "t": 0, "pad": "x" * 64}
    base = sent
    before = time.process_time()
    for seq in range(events):
        payload["seq"] = seq
        broadcaster.publish("bench.tick", payload)
        if steady:  # a steady rate: every event is its own round, delivered before the next
            for _ in range(1000):
                await asyncio.sleep(0)
                if sent - base >= clients * (seq + 1):
                    break
        else:
            await asyncio.sleep(0)
    for _ in range(3):
        await asyncio.sleep(0.011)  # the last batching round
    spent = time.process_time() - before
    delivered = broadcaster.stats()["delivered"]
    gone.set()
    await asyncio.gather(*tasks)
    assert delivered == clients * events, f"delivered {delivered} of {clients * events}"
    return spent / delivered


async def measure_bare(clients: int, events: int) -> float:
    """CPU seconds per message for an ASGI app that awaits each send in turn."""
    sent = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal sent
        sent += 1

    sends = [send] * clients
    before = time.process_time()
    for _ in range(events):
        message = {"type": "websocket.send", "text": "x" * 200}
        for each in sends:
            await each(message)
        await asyncio.sleep(0)
    return (time.process_time() - before) / sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5, help="report the best of this many")
    parser.add_argument("--batch", action="store_true", help="connections with ?batch=1")
    parser.add_argument(
        "--steady",
        action="store_true",
        help="publish the next event once the last reached everyone: one round per event, "
        "as at a steady rate below saturation",
    )
    parser.add_argument("--src", type=Path, default=HERE.parent / "src")
    parser.add_argument("--once", choices=["livepanel", "bare"], help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.once:  # one measurement in a fresh process
        sys.path.insert(0, str(options.src))
        if options.once == "bare":
            cost = asyncio.run(measure_bare(options.clients, options.events))
        else:
            cost = asyncio.run(
                measure_livepanel(options.clients, options.events, options.batch, options.steady)
            )
        print(cost)
        return
    best: dict[str, float] = {}
    for _ in range(options.runs):
        for what in ("livepanel", "bare"):
            command = [sys.executable, __file__, "--once", what, "--src", str(options.src)]
            command += ["--clients", str(options.clients), "--events", str(options.events)]
            command += ["--batch"] if options.batch else []
            command += ["--steady"] if options.steady else []
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            best[what] = min(best.get(what, float("inf")), float(out))
    print(
        f"N={options.clients} M={options.events}{' batch' if options.batch else ''}"
        f"{' steady' if options.steady else ''}, "
        f"best of {options.runs}, CPU per delivered message, livepanel from {options.src}:"
    )
    print(f"  livepanel  {best['livepanel'] * 1e6:6.2f} µs")
    print(f"  bare ASGI  {best['bare'] * 1e6:6.2f} µs  (await send() in a loop)")


if __name__ == "__main__":
    main()
