"""Health: is this process serving live events? For load balancers, probes and ``livepanel top``.

The failure this catches is the silent one: a worker whose event reader stopped
(a dead listener, a stuck connection to Redis) keeps accepting dashboards that
never receive anything, while every other check says it is fine. A reader is
*stalled* when Redis answers, an entry has waited in the stream for more than
``stall_after`` seconds without this process reading it, and its reader has
read nothing meanwhile. An idle
stream is never a stall: a reader waiting for news is healthy.

See docs/operating.md for Kubernetes probes and nginx/HAProxy checks.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from livepanel.backends.base import reader_status_of

if TYPE_CHECKING:
    from livepanel.broadcaster import Broadcaster

__all__ = ["DEFAULT_STALL_AFTER", "HealthApp", "check", "health_app"]

DEFAULT_STALL_AFTER = 5.0
"""Seconds without a read, while entries wait, after which a reader counts as stalled."""


async def check(
    broadcaster: Broadcaster, *, stall_after: float = DEFAULT_STALL_AFTER, timeout: float = 2.0
) -> dict[str, Any]:
    """The health report of ``broadcaster`` in this process (what ``Broadcaster.health()`` returns).

    Keys:

    - ``ok``: ``True`` when the backend is ``"ok"`` and the process is not draining.
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
    return {
        "ok": backend == "ok" and not draining,
        "backend": backend,
        "readerLagSeconds": None if lag is None else round(lag, 3),
        "connections": broadcaster.connection_count,
        "draining": draining,
    }


def _started(broadcaster: Broadcaster) -> bool:
    """``broadcaster.start()`` has completed (and nothing closed it since)."""
    return broadcaster.started


class HealthApp:
    """An ASGI app answering ``GET``/``HEAD`` with the health report: 200 when ok, else 503.

    Built by :func:`health_app`; any path it is mounted at answers the same.
    With ``liveness=True`` it answers 503 only for a stalled reader, the one
    state a restart cures.

    Example::

        app.add_route("/healthz", HealthApp(broadcaster, stall_after=10))
    """

    def __init__(
        self,
        broadcaster: Broadcaster | None = None,
        *,
        stall_after: float = DEFAULT_STALL_AFTER,
        timeout: float = 2.0,
        liveness: bool = False,
    ) -> None:
        self._broadcaster = broadcaster
        self.stall_after = stall_after
        self.timeout = timeout
        self.liveness = liveness

    @property
    def broadcaster(self) -> Broadcaster:
        """The broadcaster checked (the default one unless given)."""
        from livepanel.broadcaster import get_broadcaster

        return self._broadcaster if self._broadcaster is not None else get_broadcaster()

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        out: Any = send  # plain dicts: asgiref's TypedDicts add nothing here
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await out({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await out({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await receive()
            await out({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        if scope["type"] != "http":
            return
        method = scope["method"]
        if method in ("GET", "HEAD"):
            try:
                report = await asyncio.wait_for(
                    check(self.broadcaster, stall_after=self.stall_after, timeout=self.timeout),
                    self.timeout + 1.0,
                )
            except asyncio.TimeoutError:  # the loop is too busy to answer in time: unhealthy
                report = {"ok": False, "backend": "unreachable", "readerLagSeconds": None}
            healthy = report["backend"] != "stalled" if self.liveness else report["ok"]
            status = 200 if healthy else 503
            body = json.dumps(report).encode()
        else:
            status, body = 405, b'{"error": "method_not_allowed", "message": "use GET or HEAD"}'
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        await out({"type": "http.response.start", "status": status, "headers": headers})
        await out({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def health_app(
    broadcaster: Broadcaster | None = None,
    *,
    stall_after: float = DEFAULT_STALL_AFTER,
    timeout: float = 2.0,
    liveness: bool = False,
) -> HealthApp:
    """An ASGI app serving ``broadcaster``'s health: 200 or 503 with the JSON of :func:`check`.

    Args:
        broadcaster: the broadcaster to check; the default one when ``None``.
        stall_after: seconds without a read, while entries wait, that make a
            reader stalled.
        timeout: seconds Redis has to answer the check.
        liveness: answer 503 only when the reader is stalled, for a liveness
            probe: an unreachable Redis or a drain is no reason to restart.

    Example::

        from livepanel import health_app

        app.add_route("/healthz", health_app(broadcaster))  # readiness, load balancers
        app.add_route("/livez", health_app(broadcaster, liveness=True))  # liveness
        # GET /healthz -> 200 {"ok": true, "backend": "ok", "readerLagSeconds": 0.0,
        #                      "connections": 12, "draining": false}
    """
    return HealthApp(broadcaster, stall_after=stall_after, timeout=timeout, liveness=liveness)
