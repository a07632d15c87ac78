"""The in-process backend: a ring of recent events, one epoch per process."""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections import deque
from typing import Any

from livepanel.backends.base import Backend, Control, Deliver
from livepanel.events import Event
from livepanel.protocol import make_id, parse_id
from livepanel.state import DEFAULT_STATE_LIMIT, StateFold, StateSnapshot

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """Keeps the last ``history`` events in memory, and the state folded from all of them.

    Ids are ``"<epoch>:<n>"`` with a fresh random epoch per instance, so a
    ``since`` from before a restart is recognised as another epoch. Events are
    delivered at once, on the publisher's thread: the broadcaster takes them
    to each event loop's connections from there.

    Example::

        Broadcaster(MemoryBackend(history=5000, state_limit=50_000))
    """

    def __init__(self, *, history: int = 1000, state_limit: int = DEFAULT_STATE_LIMIT) -> None:
        self.history_size = history
        self.epoch = secrets.token_hex(4)
        self._fold = StateFold(self.epoch, limit=state_limit)
        self._history: deque[Event] = deque(maxlen=history)
        self._seq = 0
        self._lock = threading.Lock()  # ids, history and delivery go in one order
        self._deliver: Deliver | None = None
        self._control: Control | None = None

    @property
    def start_id(self) -> str:
        """The id that marks the start of this epoch: ``"<epoch>:0"``."""
        return make_id(self.epoch, "0")

    async def start(self, deliver: Deliver, control: Control | None = None) -> str:
        with self._lock:
            self._deliver = deliver
            self._control = control
            return make_id(self.epoch, str(self._seq))

    async def stop(self) -> None:
        with self._lock:
            self._deliver = self._control = None

    async def send_control(self, message: dict[str, Any]) -> None:
        control = self._control  # one process: straight back
        if control is not None:
            control(message)

    def publish_nowait(self, event: Event) -> Event:
        with self._lock:
            self._seq += 1
            event = dataclasses.replace(event, id=make_id(self.epoch, str(self._seq)))
            self._history.append(event)
            self._fold.apply(event)
            if self._deliver is not None:
                self._deliver((event,))
        return event

    async def publish(self, event: Event) -> Event:
        return self.publish_nowait(event)

    async def replay(self, since: str) -> list[Event] | None:
        epoch, position = parse_id(since)
        if epoch != self.epoch or len(position) != 1:
            return None
        seq = position[0]
        with self._lock:
            last = self._seq
            first = last - len(self._history) + 1  # the oldest retained event's number
            if seq == last:
                return []  # the newest event: nothing missed, even when nothing is retained
            if seq > last or seq < first - 1 or (seq == first - 1 and seq != 0):
                return None  # unknown, or trimmed (the epoch's start only while nothing is)
            return list(self._history)[seq - first + 1 :]

    async def state(self) -> StateSnapshot:
        with self._lock:
            return self._fold.snapshot()

    def stats(self) -> dict[str, int]:
        return {"state_evicted": self._fold.evicted}
