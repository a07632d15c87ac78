"""The warning that published events wait in the process appears only when they really can."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
import redis

from livepanel import Broadcaster, LivePanelMiddleware
from livepanel.backends.redis import DEFAULT_STREAM
from tests.redis.redis_helpers import Tick, run, wait_until

pytestmark = pytest.mark.redis
WAITING = "wait until its broadcaster starts"


def stream_length(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.xlen(DEFAULT_STREAM))


def waiting_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WAITING in r.getMessage()]


async def host(scope: Any, receive: Any, send: Any) -> None:
    """The app the middleware wraps: answers lifespan, nothing else."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


def test_no_warning_when_a_worker_thread_publishes_while_the_middleware_starts(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The Quickstart's shape: a sync handler (a thread) publishes before the start the
    middleware scheduled has even begun; the event waits a moment, reaches Redis, no warning."""
    caplog.set_level(logging.WARNING, logger="livepanel")
    broadcaster = Broadcaster(redis_url)
    app = LivePanelMiddleware(host, path="/ws", broadcaster=broadcaster, auth=None)
    messages: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def send(message: Any) -> None:
        pass

    async def main() -> None:
        messages.put_nowait({"type": "lifespan.startup"})
        lifespan = asyncio.ensure_future(app({"type": "lifespan"}, messages.get, send))
        await asyncio.sleep(0)  # the middleware has scheduled the start, not yet run it
        done = threading.Event()

        def handler() -> None:  # a worker thread, as a sync route runs
            broadcaster.publish(Tick(n=1))
            done.set()

        threading.Thread(target=handler).start()
        await wait_until(done.is_set, what="the handler published")
        await wait_until(lambda: stream_length(redis_url) == 1, what="the event in the stream")
        messages.put_nowait({"type": "lifespan.shutdown"})
        await lifespan
        await broadcaster.close()

    run(main())
    assert waiting_warnings(caplog) == []


def test_the_warning_comes_once_when_nothing_will_start_the_broadcaster(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain thread publishes, no loop was ever started: the events really wait, said once;
    a later start writes them all."""
    caplog.set_level(logging.WARNING, logger="livepanel")
    broadcaster = Broadcaster(redis_url)
    for n in range(3):
        broadcaster.publish(Tick(n=n))
    (message,) = waiting_warnings(caplog)
    assert "await broadcaster.start()" in message

    async def main() -> None:
        await broadcaster.start()
        await wait_until(lambda: stream_length(redis_url) == 3, what="3 entries in the stream")
        await broadcaster.close()

    run(main())


def test_no_warning_for_the_memory_backend_which_keeps_nothing_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Memory: an event published outside any loop is stored at once; nothing waits."""
    caplog.set_level(logging.WARNING, logger="livepanel")
    broadcaster = Broadcaster()
    assert broadcaster.publish(Tick(n=1)).id is not None
    assert waiting_warnings(caplog) == []
