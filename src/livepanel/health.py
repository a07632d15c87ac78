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

from livepanel.mounting import Mounted, broadcaster_of
from livepanel.readiness import DEFAULT_STALL_AFTER, check

if TYPE_CHECKING:
    from livepanel.broadcaster import Broadcaster

__all__ = ["DEFAULT_STALL_AFTER", "HealthApp", "check", "health_app"]


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
        broadcaster: Broadcaster | Mounted[Broadcaster] | None = None,
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

        if self._broadcaster is None:
            return get_broadcaster()
        return broadcaster_of(self._broadcaster)  # a mounted app's, looked up at each check

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
    broadcaster: Broadcaster | Mounted[Broadcaster] | None = None,
    *,
    stall_after: float = DEFAULT_STALL_AFTER,
    timeout: float = 2.0,
    liveness: bool = False,
) -> HealthApp:
    """An ASGI app serving ``broadcaster``'s health: 200 or 503 with the JSON of :func:`check`.

    Args:
        broadcaster: the broadcaster to check, or the ``LivePanelApp`` or
            ``LivePanelMiddleware`` serving it; the default one when ``None``.
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
