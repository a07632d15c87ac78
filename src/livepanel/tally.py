"""The numbers of ``Broadcaster.stats()``, gathered from the parts that count them.

A :class:`Tally` reads the broadcaster's :class:`~livepanel.census.Census`
(connections), the fan-out (subscribers), the delivery counters, the
backend's own counters and the :class:`~livepanel.receipts.ReceiptBook`
(each acking connection's lag, :mod:`livepanel.lag`); it writes none of them.
See ``docs/operating.md`` and ``docs/staying-live.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from livepanel.backends.base import Backend
from livepanel.census import Census
from livepanel.lag import LagSummary
from livepanel.outbox import DeliveryCounters
from livepanel.receipts import ReceiptBook

__all__ = ["Tally"]


class Tally:
    """Assembles ``Broadcaster.stats()`` and its lag summary; owned by the broadcaster.

    Args:
        census: the dashboards by transport.
        subscribers: how many connections and in-process subscriptions there are.
        counters: the delivery counters every outbox adds to.
        backend: whose own counters are merged in.
        receipts: the ack marks, whose sent logs give each connection's lag.

    Example::

        tally = Tally(census, fanout.subscribers, counters, backend, receipts)
        tally.stats()["lag"]["lagging"]  # acking connections behind right now
    """

    def __init__(
        self,
        census: Census,
        subscribers: Callable[[], int],
        counters: DeliveryCounters,
        backend: Backend,
        receipts: ReceiptBook,
    ) -> None:
        self._census = census
        self._subscribers = subscribers
        self._counters = counters
        self._backend = backend
        self._receipts = receipts

    def lag(self) -> LagSummary:
        """The lag of this process's acking dashboards, now."""
        # the writers stamp writes with loop.time(): the monotonic clock on asyncio and uvloop
        return self._receipts.lag(time.monotonic())

    def stats(self) -> dict[str, Any]:
        """``connections``, ``connections_by_transport``, ``subscribers``, ``published``,
        ``delivered``, ``dropped``, ``slow_disconnects``, ``replayed``, ``conflated``,
        ``publish_failures`` (unless the backend counts its own, as Redis does), ``lag``
        (:meth:`LagSummary.stats <livepanel.lag.LagSummary.stats>`), plus the backend's
        (``state_evicted``)."""
        return {
            "connections": self._census.connections,
            "connections_by_transport": self._census.by_transport,
            "subscribers": self._subscribers(),
            **self._counters.numbers(),
            "lag": self.lag().stats(),
            **self._backend.stats(),
        }
