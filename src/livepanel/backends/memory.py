"""The in-process backend: a ring of recent events, one epoch per process."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import threading
from collections import deque

from livepanel.backends.base import Backend, Deliver
from livepanel.events import Event
from livepanel.protocol import make_id, parse_id

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """Keeps the last ``history`` events in memory.

    Ids are ``"<epoch>:<n>"`` with a fresh random epoch per instance, so a
    ``since`` from before a restart is recognised as another epoch.

    Example::

        Broadcaster(MemoryBackend(history=5000))
    """

    def __init__(self, *, history: int = 1000) -> None:
        self.history_size = history
        self.epoch = secrets.token_hex(4)
        self._history: deque[Event] = deque(maxlen=history) if history > 0 else deque(maxlen=0)
        self._first_seq = 1  # sequence number of _history[0]
        self._seq = 0
        self._pending: list[Event] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._deliver: Deliver | None = None
        self._scheduled = False

    @property
    def start_id(self) -> str:
        return make_id(self.epoch, "0")

    async def start(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> str:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._deliver = deliver
        self.flush()
        if self._first_seq > 1 or self._history:
            return make_id(self.epoch, str(self._first_seq + len(self._history) - 1))
        return self.start_id

    async def stop(self) -> None:
        self.flush()
        self._loop = None
        self._loop_thread = None
        self._deliver = None

    def publish_nowait(self, event: Event) -> Event:
        with self._lock:
            self._seq += 1
            event = dataclasses.replace(event, id=make_id(self.epoch, str(self._seq)))
            self._pending.append(event)
            if self._loop_thread == threading.get_ident():
                schedule = False
            elif self._loop is not None and not self._scheduled:
                self._scheduled = schedule = True
            else:
                return event  # delivered by a flush already scheduled, or at start
        if schedule:
            try:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self.flush)
            except RuntimeError:  # the loop closed under us: deliver at the next start
                self._scheduled = False
        else:
            self.flush()
        return event

    async def publish(self, event: Event) -> Event:
        return self.publish_nowait(event)

    def flush(self) -> None:
        deliver = self._deliver
        if deliver is None:
            return
        with self._lock:
            batch, self._pending = self._pending, []
            self._scheduled = False
        if not batch:
            return
        history = self._history
        for event in batch:
            if history.maxlen is not None and len(history) == history.maxlen:
                self._first_seq += 1
            history.append(event)
        if history.maxlen == 0:
            self._first_seq = self._seq + 1
        deliver(batch)

    async def replay(self, since: str) -> list[Event] | None:
        self.flush()
        epoch, position = parse_id(since)
        if epoch != self.epoch or len(position) != 1:
            return None
        seq = position[0]
        last = self._first_seq + len(self._history) - 1
        if seq == last:
            return []  # the newest event: nothing missed, even when nothing is retained
        if seq == 0:
            # the epoch's start: valid while nothing has been trimmed yet
            return list(self._history) if self._first_seq == 1 else None
        if seq < self._first_seq or seq > last:
            return None
        start = seq - self._first_seq + 1
        return [self._history[i] for i in range(start, len(self._history))]
