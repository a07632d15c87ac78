"""A worker process killed with SIGKILL while clients are attached: no close frame, no
shutdown code runs. Its clients notice the lost connection, reconnect through the load
balancer to a worker still alive and resume there with ``since``: nothing lost, nothing
twice, in order."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import pytest

from livepanel import Broadcaster
from livepanel.client import connect
from tests.client.helpers import FAST, Collector
from tests.faults.helpers import Balancer, server_processes, tracebacks
from tests.redis.redis_helpers import RedisServer, Tick, run

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("kind", ["uvicorn-wsproto", "hypercorn-0"])
def test_clients_of_a_killed_worker_resume_on_another_with_nothing_lost(
    kind: str, redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers on one stream, eight clients, a steady stream of events: SIGKILL the
    first worker mid-stream. Every client ends with every event once, in order."""
    caplog.set_level(logging.INFO, logger="livepanel")
    count = 150
    with server_processes([kind] * 2, tmp_path, redis_server.url) as (doomed, survivor):

        async def scenario() -> list[Collector]:
            publisher = Broadcaster(redis_server.url)  # a third process would do the same
            try:
                async with Balancer([doomed.port, survivor.port]).running() as balancer:
                    clients, collectors = [], []
                    for _ in range(8):
                        client = connect(balancer.ws_url, max_retries=50, **FAST)
                        await client.__aenter__()
                        clients.append(client)
                        collectors.append(Collector(client))
                    assert balancer.routed == {doomed.port: 4, survivor.port: 4}
                    for n in range(count):
                        await publisher.apublish(Tick(n=n))
                        if n == 50:
                            doomed.signal(signal.SIGKILL)
                        await asyncio.sleep(0.005)  # a steady stream, not one burst
                    for collector in collectors:
                        await collector.wait_events(count, timeout=20)
                    assert balancer.routed[survivor.port] == 8  # the four came over
                    for client, collector in zip(clients, collectors, strict=True):
                        await client.close()
                        await collector.task
                    return collectors
            finally:
                await publisher.close()

        collectors = run(scenario(), timeout=60)
        assert doomed.wait() == -signal.SIGKILL
    for collector in collectors:
        assert [e.payload["n"] for e in collector.events] == list(range(count))
        assert not collector.gaps
    reconnects = [r.getMessage() for r in caplog.records if "reconnected to" in r.getMessage()]
    assert len(reconnects) == 4
    assert all("resuming after" in line for line in reconnects)
    assert not tracebacks(survivor), survivor.output()
