"""Slow consumers: a stalled reader is closed with 1013 (or loses its oldest events with
slow_consumer="drop") while a fast reader on the same broadcaster gets everything, promptly."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from livepanel import Broadcaster, Event, LivePanelApp
from tests.conftest import LogCapture
from tests.integration.helpers import (
    TIMEOUT,
    Serve,
    admin_only,
    expect_welcome,
    open_ws,
    recv_json,
    wait_until,
)
from tests.servers import RunningServer

QUEUE_SIZE = 4
OUTPUT = "x" * 32_000  # big frames fill the socket buffers in a few dozen events
MAX_EVENTS = 2_000  # ~64 MB: far beyond any socket buffer, so a stall always shows


@contextlib.contextmanager
def stalled_reader(server: RunningServer) -> Iterator[ClientConnection]:
    """A client that reads its welcome, then stops reading from its socket.

    Its websockets client stops reading the socket once one frame waits
    unread (``max_queue=1``); a small receive buffer makes the stall show early.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect((server.host, server.port))
    options: dict[str, Any] = {"compression": None, "max_queue": 1, "max_size": None}
    with open_ws(server, sock=sock, ping_interval=None, **options) as ws:
        expect_welcome(ws)
        yield ws


def cron_output(broadcaster: Broadcaster, n: int) -> Event:
    """Publish a ``cron.executed`` event with ~32 kB of stdout."""
    return broadcaster.publish(
        "cron.executed",
        {"jobId": f"j{n}", "command": "report", "exitCode": 0, "durationMs": n, "stdout": OUTPUT},
    )


def publish_in_step(
    broadcaster: Broadcaster, fast: ClientConnection, until: Callable[[], bool]
) -> list[str]:
    """Publish one event at a time, each received by ``fast`` within 2 s, until ``until()``."""
    published: list[str] = []
    for n in range(MAX_EVENTS):
        event = cron_output(broadcaster, n)
        published.append(event.id or "")
        frame = recv_json(fast, timeout=2)
        assert frame["id"] == event.id, "the fast reader lost or reordered an event"
        if until():
            return published
    raise AssertionError(f"no slow consumer showed after {MAX_EVENTS} events")


def drain(ws: ClientConnection, limit: int) -> tuple[list[str], int | None]:
    """Read a stalled client's backlog: the event ids, then its close code (None: still open)."""
    seen: list[str] = []
    for _ in range(limit):
        try:
            frame = recv_json(ws, timeout=TIMEOUT)
        except ConnectionClosed as exc:
            return seen, exc.rcvd.code if exc.rcvd is not None else None
        except TimeoutError:
            return seen, None
        if "id" in frame:
            seen.append(frame["id"])
    raise AssertionError(f"more than {limit} frames in the backlog")


def test_stalled_reader_is_closed_with_1013_while_a_fast_reader_gets_everything(
    serve: Serve, server_logs: LogCapture
) -> None:
    """A reader that stops reading is closed with 1013; a fast one loses nothing."""
    broadcaster = Broadcaster(queue_size=QUEUE_SIZE)
    app = LivePanelApp(broadcaster, auth=admin_only())
    server = serve(app)
    with open_ws(server, max_size=None) as fast, stalled_reader(server) as slow:
        expect_welcome(fast)
        published = publish_in_step(
            broadcaster, fast, lambda: broadcaster.stats()["slow_disconnects"] >= 1
        )
        assert broadcaster.connection_count == 1  # the fast one
        after = [cron_output(broadcaster, n).id for n in range(3)]
        assert [recv_json(fast)["id"] for _ in after] == after
        seen, code = drain(slow, limit=len(published) + 10)
        assert code == 1013
        assert seen == published[: len(seen)], "the slow reader got its events out of order"
    assert broadcaster.stats()["slow_disconnects"] == 1
    assert broadcaster.stats()["dropped"] == 0
    wait_until(lambda: app.connection_count == 0, what="both connections to be released")
    assert server_logs.errors() == []


def test_closed_slow_reader_resumes_with_since_and_loses_nothing(serve: Serve) -> None:
    """After a 1013 the reader reconnects with since and gets everything it missed."""
    broadcaster = Broadcaster(queue_size=QUEUE_SIZE)
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, max_size=None) as fast, stalled_reader(server) as slow:
        expect_welcome(fast)
        published = publish_in_step(
            broadcaster, fast, lambda: broadcaster.stats()["slow_disconnects"] >= 1
        )
        seen, code = drain(slow, limit=len(published) + 10)
    assert code == 1013
    since = seen[-1]
    with open_ws(server, f"since={since}", max_size=None) as again:
        expect_welcome(again)
        missed = published[published.index(since) + 1 :]
        assert [recv_json(again)["id"] for _ in missed] == missed


def test_drop_policy_drops_the_oldest_and_counts_them(
    serve: Serve, server_logs: LogCapture
) -> None:
    """slow_consumer="drop": a stalled reader stays open and loses its oldest events, counted."""
    broadcaster = Broadcaster(queue_size=QUEUE_SIZE, slow_consumer="drop")
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server, max_size=None) as fast, stalled_reader(server) as slow:
        expect_welcome(fast)
        published = publish_in_step(broadcaster, fast, lambda: broadcaster.stats()["dropped"] >= 3)
        assert broadcaster.connection_count == 2
        last = cron_output(broadcaster, len(published)).id or ""
        assert recv_json(fast)["id"] == last
        published.append(last)
        seen: list[str] = []
        for _ in range(len(published)):
            seen.append(recv_json(slow)["id"])
            if seen[-1] == last:
                break
    dropped = broadcaster.stats()["dropped"]
    assert seen[-1] == last  # the newest survive
    assert len(seen) == len(published) - dropped
    assert seen == [i for i in published if i in set(seen)]  # in order
    assert seen[-QUEUE_SIZE:] == published[-QUEUE_SIZE:]  # what was dropped was the oldest
    assert broadcaster.stats()["slow_disconnects"] == 0
    assert server_logs.errors() == []
