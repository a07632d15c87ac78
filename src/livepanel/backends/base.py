"""The contract between the broadcaster and a backend: store, replay a range, deliver in order.

A backend does three things, and nothing else:

* **store**: :meth:`Backend.publish` / :meth:`Backend.publish_nowait` append
  an event to the stream and give it an id, ``"<epoch>:<position>"`` (see
  :mod:`livepanel.protocol`), increasing within the stream;
* **replay a range**: :meth:`Backend.replay` returns every retained event
  after a given id, in stream order, or ``None`` when that id is not itself
  retained in the current epoch;
* **deliver in order**: once started, it calls ``deliver`` with every new
  event of the stream exactly once, in stream order, one call at a time (from
  any thread);
* **keep the state**: :meth:`Backend.state` returns the fold of the stream's
  events (:class:`livepanel.state.StateFold`) up to and including one event
  id, read in one step with that id, so that it matches a stream position.

What a backend need not do is line its live feed up with a replay: the
broadcaster holds live events back while a replay runs and drops the ones
the replay covers, whether the feed runs ahead of the stored range or behind
it. See ``docs/concepts.md``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

from livepanel.events import Event
from livepanel.state import StateSnapshot

__all__ = ["Backend", "Control", "Deliver"]

Deliver = Callable[[Sequence[Event]], None]
"""Called with newly stored events, in stream order, one call at a time, from any thread."""
Control = Callable[[dict[str, Any]], None]
"""Called with each control message (a revocation) sent through the stream, on any thread."""


class Backend(abc.ABC):
    """Stores the stream of events, replays a range of it, delivers new events in order.

    Example, handing a broadcaster a backend of your own (``MemoryBackend``
    and ``RedisBackend`` are the two that ship)::

        class PostgresBackend(Backend):
            async def start(self, deliver): ...
            def publish_nowait(self, event): ...
            async def publish(self, event): ...
            async def replay(self, since): ...
            async def state(self): ...

        broadcaster = Broadcaster(PostgresBackend(dsn))
    """

    @abc.abstractmethod
    async def start(self, deliver: Deliver, control: Control | None = None) -> str:
        """Begin delivering new events to ``deliver``, from the running event loop.

        Returns the id of the newest event, or the epoch's start id while the
        stream is empty; ``deliver`` gets exactly the events after it. Called
        again, on another loop, when the loop it ran on has closed. ``control``
        gets every message of :meth:`send_control`, from this process or any
        other sharing the stream.
        """

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

    @abc.abstractmethod
    async def send_control(self, message: dict[str, Any]) -> None:
        """Hand ``message`` to the ``control`` callback of every process sharing the stream
        (this one included); raise ``BackendUnavailable`` when it cannot."""

    async def state(self) -> StateSnapshot:
        """The state folded from the stream, with the id of the newest event it covers.

        Raises:
            BackendUnavailable: the state cannot be read now.
        """
        raise NotImplementedError(
            f"{type(self).__name__} keeps no state; implement Backend.state() to serve ?state=1"
        )

    def stats(self) -> dict[str, Any]:
        """Backend counters merged into ``Broadcaster.stats()``."""
        return {}
