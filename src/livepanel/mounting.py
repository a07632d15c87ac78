"""What the operating features accept as "the app": the broadcaster, or what serves it.

A user holds whatever they mounted: a ``LivePanelApp``, a
``LivePanelMiddleware`` (the Quickstart's), or only the broadcaster. Both ASGI
classes are :class:`Mounted`: each says which broadcaster it serves. So
``health_app``, ``Tickets``, ``presence.track`` and ``metrics.instrument`` take
any of the three, and :func:`broadcaster_of` is the one place that tells them
apart. This module imports nothing of livepanel's, so that any module may use it.
"""

from __future__ import annotations

import abc
from typing import Generic, TypeVar

__all__ = ["Mounted", "broadcaster_of"]

B = TypeVar("B")


class Mounted(abc.ABC, Generic[B]):
    """An ASGI app that serves a broadcaster's endpoint: ``LivePanelApp``, ``LivePanelMiddleware``.

    Example::

        isinstance(LivePanelMiddleware(app, auth=None), Mounted)  # True
    """

    @property
    @abc.abstractmethod
    def broadcaster(self) -> B:
        """The broadcaster this endpoint serves."""


def broadcaster_of(source: B | Mounted[B]) -> B:
    """The broadcaster itself, or the one a mounted endpoint serves.

    Example::

        broadcaster_of(LivePanelMiddleware(app, auth=None))  # the default broadcaster
        broadcaster_of(broadcaster) is broadcaster  # True
    """
    if isinstance(source, Mounted):
        return source.broadcaster
    return source
