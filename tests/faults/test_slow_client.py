"""A client whose TCP window is full, among fast clients, under a steady stream of large
events on a real server: it is closed with 1013 and the others do not slow down."""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from livepanel import Broadcaster, LivePanelApp
from tests.conftest import LogCapture
from tests.integration.helpers import PASSWORD, USERNAME, admin_only, basic, wait_until
from tests.integration.test_slow_consumer import drain, stalled_reader
from tests.redis.redis_helpers import run
from tests.servers import SERVERS, run_server

FAST_CLIENTS = 6
EVENTS = 400
PACE = 0.008  # seconds between two events: a steady ~125 events/s
OUTPUT = "x" * 16_000


@pytest.fixture
def quiet_heap() -> Iterator[None]:
    """Latency is measured here, in a process that may hold the heap of a thousand earlier
    tests: collect once, then keep those objects out of the collector's way (a full
    collection over them pauses every thread of the process for a few hundred ms)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("quiet_heap")
@pytest.mark.parametrize("kind", SERVERS)
def test_a_full_tcp_window_closes_that_client_with_1013_and_does_not_slow_the_others(
    kind: str, server_logs: LogCapture
) -> None:
    """One client stops reading its socket; six read on. 400 events of 16 kB, 8 ms apart:
    the stalled client is closed with 1013 after what it could take, in order; every fast
    client gets every event, in order, with a p99 latency under 250 ms."""
    # room for a fast reader that a busy machine delays by a few loop turns; the stalled
    # reader still fills it long before the 400th event
    broadcaster = Broadcaster(queue_size=96)
    app = LivePanelApp(broadcaster, auth=admin_only())
    published: dict[str, float] = {}  # event id -> when it was published
    order: list[str] = []
    with run_server(app, kind) as server, stalled_reader(server) as slow:
        url = f"{server.ws_url}/ws"
        headers = {"Authorization": basic(USERNAME, PASSWORD)}

        async def reader(ready: asyncio.Event) -> list[float]:
            latencies: list[float] = []
            seen: list[str] = []
            async with connect(url, additional_headers=headers, proxy=None, max_size=None) as ws:
                assert json.loads(await ws.recv())["type"] == "welcome"
                ready.set()
                async for message in ws:
                    frame: dict[str, Any] = json.loads(message)
                    if "id" not in frame:
                        continue
                    latencies.append(time.monotonic() - published[frame["id"]])
                    seen.append(frame["id"])
                    if len(seen) == EVENTS:
                        break
            assert seen == order, "a fast client lost or reordered events"
            return latencies

        async def scenario() -> list[float]:
            readies = [asyncio.Event() for _ in range(FAST_CLIENTS)]
            readers = [asyncio.ensure_future(reader(r)) for r in readies]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 10)
            for n in range(EVENTS):
                sent = time.monotonic()
                event = broadcaster.publish(
                    "cron.executed",
                    {"jobId": f"j{n}", "command": "c", "exitCode": 0, "durationMs": n,
                     "stdout": OUTPUT},
                )  # fmt: skip
                assert event.id is not None
                published[event.id] = sent
                order.append(event.id)
                await asyncio.sleep(max(0.0, sent + PACE - time.monotonic()))
            results = await asyncio.wait_for(asyncio.gather(*readers), 30)
            return [latency for result in results for latency in result]

        latencies = run(scenario(), timeout=60)
        assert broadcaster.stats()["slow_disconnects"] == 1
        seen, code = drain(slow, limit=EVENTS + 10)
        assert code == 1013
        assert seen == order[: len(seen)]
        assert len(seen) < EVENTS
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.25, f"fast clients' p99 latency {p99 * 1000:.0f} ms"
    wait_until(lambda: app.connection_count == 0, what="every connection to be released")
    assert threading.active_count() < 50
    assert server_logs.errors() == []
