"""A worker process for the leader tests: ``python -m tests.leader.leader_worker URL STREAM``.

It runs one job under ``run_once`` on a Redis backend: each run publishes three
``poller.tick`` events, 0.1 s apart, naming this worker and its lease token (``term``).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from livepanel import Broadcaster, event_type
from livepanel.backends.redis import RedisBackend
from livepanel.leader import Lease, run_once

EVERY = 0.5
TTL = 2.0


@event_type("poller.tick")
class Tick:
    holder: str
    term: int  # the lease's fencing token (a key named token would be redacted)
    n: int


async def main(url: str, stream: str) -> None:
    broadcaster = Broadcaster(RedisBackend(url, stream=stream))
    await broadcaster.start()
    runs = 0

    async def job(lease: Lease) -> None:
        nonlocal runs
        runs += 1
        for i in range(3):
            assert lease.token is not None
            await lease.apublish(Tick(holder=lease.holder, term=lease.token, n=runs * 10 + i))
            await asyncio.sleep(0.1)

    print("ready", flush=True)
    await run_once(broadcaster, "ticker", job, every=EVERY, ttl=TTL)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
