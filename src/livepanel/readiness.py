"""Whether this process serves live events: the report behind ``Broadcaster.health()``.

:func:`check` reads what it needs of a broadcaster through :class:`Served`, and
the backend's reader through its declared capability
(:class:`~livepanel.backends.base.ReaderStatus`); :mod:`livepanel.health`
serves the report over HTTP.
"""

from __future__ import annotations

from typing import Any, Protocol

from livepanel.backends.base import Backend, reader_status_of
from livepanel.lag import LagSummary

__all__ = ["DEFAULT_STALL_AFTER", "Served", "check"]


class Served(Protocol):
    """What :func:`check` reads of a broadcaster (``Broadcaster`` has all of it).

    Example::

        report = await check(broadcaster)  # any object with these members
    """

    @property
    def backend(self) -> Backend:
        """The backend the events go through."""
        ...

    @property
    def draining(self) -> bool:
        """Whether the app began shutting down."""
        ...

    @property
    def started(self) -> bool:
        """Whether the backend started and runs on a live loop."""
        ...

    @property
    def connection_count(self) -> int:
        """This process's live dashboards."""
        ...

    @property
    def lag_limit(self) -> float:
        """Seconds an acking dashboard may stay behind (:mod:`livepanel.lag`)."""
        ...

    def lag(self) -> LagSummary:
        """The lag of this process's acking dashboards."""
        ...

    def start_soon(self) -> None:
        """Start the backend in the running loop, without waiting."""
        ...


DEFAULT_STALL_AFTER = 5.0
"""Seconds without a read, while entries wait, after which a reader counts as stalled."""


async def check(
    broadcaster: Served, *, stall_after: float = DEFAULT_STALL_AFTER, timeout: float = 2.0
) -> dict[str, Any]:
    """The health report of ``broadcaster`` in this process (what ``Broadcaster.health()`` returns).

    Keys:

    - ``ok``: ``True`` when the backend is ``"ok"``, the dashboards are ``"ok"`` and the
      process is not draining.
    - ``backend``: ``"ok"``; ``"unreachable"`` (Redis did not answer within
      ``timeout`` seconds); ``"stalled"`` (an entry has waited unread for more
      than ``stall_after`` seconds and the reader has read nothing meanwhile,
      or its task has ended);
      ``"starting"`` (the reader has not started yet: it starts on first use,
      and this call starts it).
    - ``readerLagSeconds``: how far this process's reader trails the stream,
      the age of the oldest entry it has not read (``0.0`` when it is up to
      date, always for the memory backend; ``None`` when Redis did not answer).
    - ``connections``: this process's live WebSocket connections.
    - ``dashboards``: ``"ok"``, or ``"not_acking"`` when this process has dashboards
      that ack and every one of them has been behind (sent events it has not
      acknowledged) for more than the broadcaster's ``lag_limit`` seconds. A
      dashboard that never acked, or one with nothing unacknowledged, keeps it ``"ok"``.
    - ``ackLag``: ``{"acking", "behind", "maxSeconds", "limitSeconds"}``: the dashboards
      that ack, how many of them are behind for more than the limit, the longest lag.
    - ``reason``: why ``ok`` is ``False``, in a sentence (``None`` when it is ``True``).
    - ``draining``: ``True`` once ``LivePanelApp.shutdown()`` began (``SIGTERM``,
      ``lifespan.shutdown``): a load balancer should stop sending new clients.

    Example::

        report = await check(broadcaster, stall_after=10)
        if not report["ok"]:
            logger.warning("livepanel unhealthy: %s", report)
    """
    draining = bool(broadcaster.draining)
    if not draining:
        broadcaster.start_soon()  # a reader that never started is as deaf as a stalled one
    backend = "ok"
    lag: float | None = 0.0
    reader = reader_status_of(broadcaster.backend)
    if reader is not None:
        status = await reader.reader_status(timeout)
        lag, idle = status["lagSeconds"], status["idleSeconds"]
        if not status["reachable"]:
            backend = "unreachable"
        elif not status["running"]:
            # started, yet no reader: it died; otherwise it is on its way
            backend = "stalled" if _started(broadcaster) else "starting"
        elif (
            status["waiting"]
            and lag is not None
            and idle is not None
            and min(lag, idle) > stall_after
        ):
            # an entry older than the threshold is unread and nothing was read meanwhile
            backend = "stalled"
    limit = broadcaster.lag_limit
    acks = broadcaster.lag()
    stuck = acks.stuck(limit)
    return {
        "ok": backend == "ok" and not draining and not stuck,
        "backend": backend,
        "readerLagSeconds": None if lag is None else round(lag, 3),
        "connections": broadcaster.connection_count,
        "draining": draining,
        "dashboards": "not_acking" if stuck else "ok",
        "ackLag": {
            "acking": acks.acking,
            "behind": acks.behind_for(limit),
            "maxSeconds": round(acks.readings[0].seconds, 3) if acks.readings else 0.0,
            "limitSeconds": limit,
        },
        "reason": _reason(backend, draining, stuck, acks.acking, limit),
    }


def _reason(backend: str, draining: bool, stuck: bool, acking: int, limit: float) -> str | None:
    """Why the report is not ok, for a human reading the health body."""
    if draining:
        return "this process is shutting down"
    if backend != "ok":
        return f"the backend is {backend}"
    if stuck:
        return (
            f"every dashboard that acks ({acking}) is behind by over {limit:g} s while events flow"
        )
    return None


def _started(broadcaster: Served) -> bool:
    """``broadcaster.start()`` has completed (and nothing closed it since)."""
    return broadcaster.started
