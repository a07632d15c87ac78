"""A backend written against ``livepanel.backends.base`` alone: the contract, and nothing more.

It declares no capability, keeps no state and knows nothing of the memory or
Redis backends: what the broadcaster, the endpoint and the features need of a
third-party backend must be in the contract, or this one fails the contract
tests.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections import deque
from typing import Any

from livepanel.backends.base import Backend, Control, Deliver
from livepanel.events import Event
from livepanel.protocol import make_id, parse_id

__all__ = ["ContractOnlyBackend"]


class ContractOnlyBackend(Backend):
    """The last ``history`` events of one process, numbered in a fresh epoch."""

    def __init__(self, history: int = 100) -> None:
        self.epoch = secrets.token_hex(4)
        self.history: deque[Event] = deque(maxlen=history)
        self.count = 0
        self.lock = threading.Lock()  # ids, history and delivery in one order
        self.deliver: Deliver | None = None
        self.control: Control | None = None

    async def start(self, deliver: Deliver, control: Control | None = None) -> str:
        with self.lock:
            self.deliver, self.control = deliver, control
            return make_id(self.epoch, str(self.count))

    async def stop(self) -> None:
        with self.lock:
            self.deliver = self.control = None

    def publish_nowait(self, event: Event) -> Event:
        with self.lock:
            self.count += 1
            event = dataclasses.replace(event, id=make_id(self.epoch, str(self.count)))
            self.history.append(event)
            if self.deliver is not None:
                self.deliver([event])
        return event

    async def publish(self, event: Event) -> Event:
        return self.publish_nowait(event)

    async def replay(self, since: str) -> list[Event] | None:
        epoch, position = parse_id(since)
        if epoch != self.epoch or len(position) != 1:
            return None
        with self.lock:
            oldest = self.count - len(self.history)  # the number before the oldest retained
            if position[0] == self.count:
                return []
            if not oldest <= position[0] < self.count or (position[0] == oldest and oldest):
                return None  # unknown, or no longer retained
            return list(self.history)[position[0] - oldest :]

    async def send_control(self, message: dict[str, Any]) -> None:
        control = self.control
        if control is not None:
            control(message)
