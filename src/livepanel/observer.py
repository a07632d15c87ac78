"""What operating features watch in a broadcaster: one interface instead of hook lists.

Tracing, metrics and presence each subclass :class:`Observer`, override the
methods they need, and register with ``Broadcaster.observe()``. The
broadcaster calls only the methods a subclass overrides, so an observer costs
nothing on the paths it does not watch.
"""

from __future__ import annotations

from collections.abc import Sequence

from livepanel.events import Event

__all__ = ["Observer"]


class Observer:
    """A base class for what watches a broadcaster; every method does nothing here.

    Example::

        class Counter(Observer):
            def __init__(self) -> None:
                self.seen = 0

            def fanned_out(self, events: Sequence[Event]) -> None:
                self.seen += len(events)

        broadcaster.observe(Counter())
    """

    def published(self, event: Event) -> Event:
        """An event is about to go to the backend (any thread); return it, or a copy."""
        return event

    def fanned_out(self, events: Sequence[Event]) -> None:
        """New events, in stream order, were handed to this process's connections."""

    def users_changed(self) -> None:
        """A dashboard joined or left (on its event loop's thread)."""

    def overrides(self, name: str) -> bool:
        """Whether this observer's class overrides the method ``name`` of :class:`Observer`."""
        return getattr(type(self), name) is not getattr(Observer, name)
