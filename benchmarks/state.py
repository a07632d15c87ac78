"""The cost of state on connect: publishing with and without collections, and a big state frame.

Two event types with the same payload, one declared with a collection
(``event_type(..., collection="bench", key="key")``) and one without, are
published in turns on the memory backend, in one run, so that the machine's
noise hits both alike; the best of a few rounds is reported. Then a state of
10,000 sessions is built, and the ``state`` frame a connection gets is timed
and measured: the first one serializes each entry (published before any
connection, they were never sent live), later ones reuse the text every event
keeps of itself.

    python benchmarks/state.py                          # 20,000 events a round, best of 5
    python benchmarks/state.py --src /work/main/src     # also the plain rate of another tree
    python benchmarks/state.py --redis redis://127.0.0.1:6390/0   # also through Redis

Prints one JSON object (``--json FILE`` writes it too). See docs/state.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

PLAIN_RATE = """
import sys, time
sys.path.insert(0, {src!r})
from livepanel import Broadcaster, event_type

@event_type("bench.plain")
class Plain:
    key: str
    value: int

b = Broadcaster(history=1000)
best = 0.0
for _ in range({rounds}):
    start = time.perf_counter()
    for n in range({events}):
        b.publish("bench.plain", {{"key": f"k{{n % 1000}}", "value": n}})
    best = max(best, {events} / (time.perf_counter() - start))
print(best)
"""


def publish_rates(events: int, rounds: int) -> dict[str, float]:
    """Events per second through ``Broadcaster.publish``, best of ``rounds``, per type."""
    from livepanel import Broadcaster, event_type

    @event_type("bench.plain")
    class Plain:
        key: str
        value: int

    @event_type("bench.keyed", collection="bench", key="key")
    class Keyed:
        key: str
        value: int

    broadcaster = Broadcaster(history=1000)
    best = {"without_collection": 0.0, "with_collection": 0.0}
    for _ in range(rounds):
        pairs = (("without_collection", "bench.plain"), ("with_collection", "bench.keyed"))
        for label, kind in pairs:
            start = time.perf_counter()
            for n in range(events):
                broadcaster.publish(kind, {"key": f"k{n % 1000}", "value": n})
            best[label] = max(best[label], events / (time.perf_counter() - start))
    return best


async def redis_rates(url: str, events: int, rounds: int) -> dict[str, float]:
    """Events per second through Redis (written by the publish script, read back by this
    process's reader), best of ``rounds``, per type; the stream is emptied first."""
    import redis.asyncio as redis_asyncio

    from livepanel import Broadcaster

    client = redis_asyncio.Redis.from_url(url)
    await client.delete("bench:events", "bench:events:epoch", "bench:events:state")
    await client.delete("bench:events:state:order")
    await client.aclose()
    broadcaster = Broadcaster(f"{url}?stream=bench:events", history=1000)
    await broadcaster.start()
    best = {"without_collection": 0.0, "with_collection": 0.0}
    try:
        for _ in range(rounds):
            for label, kind in (
                ("without_collection", "bench.plain"),
                ("with_collection", "bench.keyed"),
            ):
                start = time.perf_counter()
                for n in range(events):
                    broadcaster.publish(kind, {"key": f"k{n % 1000}", "value": n})
                last = await broadcaster.apublish(kind, {"key": "k", "value": -1})
                for _ in range(100_000):  # until this process's reader delivered it
                    if broadcaster.last_event_id == last.id:
                        break
                    await asyncio.sleep(0.001)
                best[label] = max(best[label], (events + 1) / (time.perf_counter() - start))
    finally:
        await broadcaster.close()
    return best


def fold_cost(events: int, rounds: int) -> float:
    """Microseconds ``StateFold.apply`` takes per keyed event (1,000 keys), best of ``rounds``:
    the part of a publish that state on connect adds, without the noise of a whole publish."""
    from livepanel import Event
    from livepanel.state import StateFold

    batch = [
        Event("bench.keyed", {"key": f"k{n % 1000}", "value": n}, id=f"e1:{n + 1}")
        for n in range(events)
    ]
    best = float("inf")
    for _ in range(rounds):
        fold = StateFold("e1")
        start = time.perf_counter()
        for event in batch:
            fold.apply(event)
        best = min(best, (time.perf_counter() - start) / events)
    return best * 1e6


def other_tree_rate(src: str, events: int, rounds: int) -> float:
    """The plain publish rate of another livepanel source tree, in a fresh interpreter."""
    code = PLAIN_RATE.format(src=src, events=events, rounds=rounds)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


async def big_state(entries: int) -> dict[str, Any]:
    """Build ``entries`` sessions; time the state read and the frame a connection gets."""
    import livepanel.events.builtin  # noqa: F401 - the sessions collection, opt-in
    from livepanel import Broadcaster
    from livepanel.protocol import TypeFilter
    from livepanel.state import state_frame

    broadcaster = Broadcaster(history=1000, state_limit=entries)
    for n in range(entries):
        payload = {"sessionKey": f"session-{n:05d}", "agentId": f"agent-{n % 7}", "kind": "direct"}
        broadcaster.publish("session.created", payload)
    await broadcaster.start()
    # events published before any loop ran were never serialized for a live frame: the
    # first state frame serializes each entry once (Event.to_json keeps the text)
    start = time.perf_counter()
    state_frame(await broadcaster.backend.state(), TypeFilter(["*"]))
    first = time.perf_counter() - start
    snapshot_times, frame_times, connect_times = [], [], []
    frame = ""
    for _ in range(5):
        start = time.perf_counter()
        snapshot = await broadcaster.backend.state()
        snapshot_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        frame = state_frame(snapshot, TypeFilter(["*"]))
        frame_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        async with broadcaster.connection() as conn:
            await conn.subscribe(["*"], None, state=True)
            assert len(conn.outbox)
            assert list(conn.outbox)[-1].text.startswith('{"type":"state"')
        connect_times.append(time.perf_counter() - start)
    await broadcaster.close()
    return {
        "entries": entries,
        "frame_bytes": len(frame.encode()),
        "read_ms": round(min(snapshot_times) * 1000, 2),
        "serialize_first_ms": round(first * 1000, 2),
        "serialize_ms": round(min(frame_times) * 1000, 2),
        "subscribe_with_state_ms": round(min(connect_times) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per type and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best counts")
    parser.add_argument("--entries", type=int, default=10_000, help="entries of the big state")
    parser.add_argument("--src", help="another livepanel src/ tree: its plain publish rate too")
    parser.add_argument("--redis", metavar="URL", help="also publish through this Redis")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    rates = publish_rates(args.events, args.rounds)
    fold_us = fold_cost(args.events, args.rounds)
    results: dict[str, Any] = {
        "publish_per_second": {k: round(v) for k, v in rates.items()},
        "with_collection_vs_without": round(
            rates["with_collection"] / rates["without_collection"], 3
        ),
        "fold_us_per_event": round(fold_us, 3),
        "fold_share_of_a_publish": round(fold_us * rates["without_collection"] / 1e6, 4),
    }
    if args.redis:
        through = asyncio.run(redis_rates(args.redis, args.events // 4, args.rounds))
        results["redis_per_second"] = {k: round(v) for k, v in through.items()}
        results["redis_with_collection_vs_without"] = round(
            through["with_collection"] / through["without_collection"], 3
        )
    if args.src:
        other = other_tree_rate(args.src, args.events, args.rounds)
        results["other_tree"] = {"src": args.src, "publish_per_second": round(other)}
    results["state_frame"] = asyncio.run(big_state(args.entries))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
