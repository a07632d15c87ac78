"""What operating features watch in a broadcaster: one interface instead of hook lists.

Tracing, metrics and presence each subclass :class:`Observer`, override the
methods they need, and register with ``Broadcaster.observe()``. The
broadcaster calls only the methods a subclass overrides, so an observer costs
nothing on the paths it does not watch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from livepanel.events import Event

__all__ = ["Observer", "Observers"]


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

    async def presence_view(self) -> dict[str, Any] | None:
        """Who is connected on every worker, when this observer keeps track (presence does);
        ``None``: ask the next one, else the broadcaster counts this process alone."""
        return None

    def overrides(self, name: str) -> bool:
        """Whether this observer's class overrides the method ``name`` of :class:`Observer`."""
        return getattr(type(self), name) is not getattr(Observer, name)


class Observers:
    """The observers of one broadcaster, each method called only where a class overrides it.

    Example::

        >>> observers = Observers()
        >>> observers.add(Observer())
        >>> observers.fanned_out([])  # nobody overrides it: nothing runs
    """

    __slots__ = ("_fanned_out", "_presence", "_published", "_users_changed", "all")

    def __init__(self) -> None:
        self.all: tuple[Observer, ...] = ()
        self._published: list[Callable[[Event], Event]] = []
        self._fanned_out: list[Callable[[Sequence[Event]], None]] = []
        self._users_changed: list[Callable[[], None]] = []
        self._presence: list[Observer] = []

    def add(self, observer: Observer) -> None:
        """Register ``observer`` after the others."""
        self.all += (observer,)
        if observer.overrides("published"):
            self._published.append(observer.published)
        if observer.overrides("fanned_out"):
            self._fanned_out.append(observer.fanned_out)
        if observer.overrides("users_changed"):
            self._users_changed.append(observer.users_changed)
        if observer.overrides("presence_view"):
            self._presence.append(observer)

    def published(self, event: Event) -> Event:
        """Pass ``event`` through every observer's :meth:`Observer.published`, in order."""
        for published in self._published:
            event = published(event)
        return event

    def fanned_out(self, events: Sequence[Event]) -> None:
        """Tell every observer that watches fan-outs."""
        for fanned_out in self._fanned_out:
            fanned_out(events)

    def users_changed(self) -> None:
        """Tell every observer that watches who is connected."""
        for changed in self._users_changed:
            changed()

    async def presence_view(self) -> dict[str, Any] | None:
        """The first presence view an observer keeps; ``None`` when none does."""
        for observer in self._presence:
            view = await observer.presence_view()
            if view is not None:
                return view
        return None
