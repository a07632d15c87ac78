"""``python -m tests.browser.publisher URL COUNT``: publish COUNT cron runs, print their ids.

The second process of the Redis browser test: it keeps publishing to the
stream while the demo server is down.
"""

from __future__ import annotations

import asyncio
import sys

from livepanel import Broadcaster
from livepanel.events import CronExecuted


async def publish(url: str, count: int, spacing: float = 0.02) -> list[str]:
    broadcaster = Broadcaster(url)
    ids: list[str] = []
    try:
        for n in range(count):
            event = await broadcaster.apublish(
                CronExecuted(job_id=f"while-away-{n}", command="true", exit_code=0, duration_ms=n)
            )
            assert event.id is not None
            ids.append(event.id)
            await asyncio.sleep(spacing)
    finally:
        await broadcaster.close()
    return ids


if __name__ == "__main__":
    for event_id in asyncio.run(asyncio.wait_for(publish(sys.argv[1], int(sys.argv[2])), 30)):
        print(event_id)
