"""The contract between the broadcaster and a backend."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from livepanel.events import Event

__all__ = ["Backend", "Deliver"]

Deliver = Callable[[Sequence[Event]], None]
"""Called on the event loop's thread with newly accepted events, in stream order."""


class Backend(abc.ABC):
    """Stores the stream of events and hands new ones to the broadcaster.

    A backend assigns ids (``"<epoch>:<position>"``, see :mod:`livepanel.protocol`),
    keeps a bounded history for ``since`` and calls ``deliver`` with every new
    event of the stream exactly once, in order, on the loop's thread.

    Example, handing a broadcaster a backend of your own (``MemoryBackend``
    and ``RedisBackend`` are the two that ship)::

        class PostgresBackend(Backend):
            async def start(self, loop, deliver): ...
            def publish_nowait(self, event): ...
            async def publish(self, event): ...
            async def replay(self, since): ...

        broadcaster = Broadcaster(PostgresBackend(dsn))
    """

    @abc.abstractmethod
    async def start(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> str:
        """Begin delivering; return the id of the newest event, or the epoch's start id."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop delivering and release connections."""

    @abc.abstractmethod
    def publish_nowait(self, event: Event) -> Event:
        """Hand ``event`` on from any thread without blocking.

        Returns the event, with its ``id`` when the backend assigns it at once.
        """

    @abc.abstractmethod
    async def publish(self, event: Event) -> Event:
        """Store ``event`` and return it with its ``id``; raise ``BackendUnavailable``."""

    @abc.abstractmethod
    async def replay(self, since: str) -> list[Event] | None:
        """Every retained event after ``since``, or ``None`` when ``since`` is not retained."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Deliver, on the loop's thread, whatever was accepted but not yet delivered."""

    def stats(self) -> dict[str, Any]:
        """Backend counters merged into ``Broadcaster.stats()``."""
        return {}
