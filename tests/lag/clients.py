"""Dashboards made of the websockets client, which ack (or stop, or lie) as a test says."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from livepanel import Broadcaster
from tests.integration.helpers import AUTH, expect_welcome, open_ws, session_created
from tests.servers import RunningServer

ACK_EVERY = 0.1  # seconds between two acks of one client, at most (livepanel.js: 0.25)


class Dashboard:
    """A client that reads everything in a thread of its own and acks the newest event every
    ACK_EVERY seconds while ``acking`` is set; clear it and the client goes on reading but
    acknowledges nothing more (as a page whose JavaScript is stalled)."""

    def __init__(
        self,
        server: RunningServer,
        *,
        acking: bool = True,
        query: str = "",
        headers: Mapping[str, str] = AUTH,
    ) -> None:
        self.ws: ClientConnection = open_ws(server, query, headers=headers)
        self.welcome = expect_welcome(self.ws)
        self.acking = acking
        self.newest: str | None = None
        self.received = 0
        self.acked: str | None = None
        self.closed_with: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            try:
                text = self.ws.recv(timeout=0.05)
            except TimeoutError:
                text = None
            except ConnectionClosed as exc:
                self.closed_with = exc.rcvd.code if exc.rcvd is not None else -1
                return
            for line in (text or "").splitlines():
                frame = json.loads(line)
                if "id" in frame:
                    self.newest = frame["id"]
                    self.received += 1
            now = time.monotonic()
            if self.acking and self.newest not in (None, self.acked) and now - last >= ACK_EVERY:
                self.send_ack(self.newest)
                self.acked, last = self.newest, now

    def send_ack(self, event_id: Any) -> None:
        """Send an ``ack`` of ``event_id`` (whatever it is)."""
        with contextlib.suppress(ConnectionClosed):
            self.ws.send(json.dumps({"type": "ack", "payload": {"id": event_id}}))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.ws.close()


@contextlib.contextmanager
def dashboards(server: RunningServer, *acking: bool) -> Iterator[list[Dashboard]]:
    """One :class:`Dashboard` per flag, all closed at the end."""
    opened: list[Dashboard] = []
    try:
        for flag in acking:
            opened.append(Dashboard(server, acking=flag))
        yield opened
    finally:
        for dashboard in opened:
            dashboard.close()


@contextlib.contextmanager
def events_flowing(broadcaster: Broadcaster, per_second: float = 20.0) -> Iterator[list[str]]:
    """Publish ``session.created`` at ``per_second`` in a thread until the block ends (at most
    two minutes); yields the ids published so far."""
    published: list[str] = []
    stop = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + 120
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            n += 1
            event = session_created(broadcaster, n)
            if event.id is not None:
                published.append(event.id)
            stop.wait(1 / per_second)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield published
    finally:
        stop.set()
        thread.join(5)
