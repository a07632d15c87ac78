"""``livepanel doctor URL``: check a deployment from the outside, one finding per line.

Every probe goes over the network as a dashboard's would, through whatever
proxy stands in front of the application: a plain ``GET`` (livepanel answers
426 once every check of a handshake passed), the same URL with and without its
trailing slash, a WebSocket handshake offering ``permessage-deflate`` (through
the client's own :class:`~livepanel.client.wire.ClientWire`), the connection
left idle for two heartbeat intervals, a Server-Sent Events stream watched for
a heartbeat, a handshake from a foreign ``Origin``, and the server's clock.
Each step is bounded by ``timeout``; the idle watch by two heartbeat intervals
(at most :data:`MAX_WATCH` seconds). The findings and their fixes are
described in ``docs/staying-live.md``.
"""

from __future__ import annotations

import asyncio
import math
import ssl as ssl_module

from livepanel.client.endpoint import Endpoint
from livepanel.doctor._plain import PlainChecks
from livepanel.doctor._probe import FOREIGN_ORIGIN, MAX_WATCH, Finding, Level, report
from livepanel.doctor._sockets import SocketChecks

__all__ = ["FOREIGN_ORIGIN", "MAX_WATCH", "Finding", "Level", "diagnose", "report"]


async def diagnose(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
    ssl: ssl_module.SSLContext | None = None,
) -> list[Finding]:
    """Check the livepanel endpoint at ``url`` from the outside; one :class:`Finding` each.

    Args:
        url: ``https://host/ws`` or ``wss://host/ws`` (``http``/``ws`` for plain text).
        username: Basic Auth user name (``None``: no credentials).
        password: its password.
        timeout: seconds each network step may take.
        ssl: the TLS context (default: the system's CAs).

    Raises:
        ValueError: not an http(s) or ws(s) URL, or ``timeout`` not > 0.

    Example::

        findings = await diagnose("https://panel.example.com/ws", username="admin", password=pw)
        print("\\n".join(f.line() for f in findings))
    """
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError("timeout must be a number of seconds > 0")
    endpoint = Endpoint.parse(
        _ws_url(url),
        username=username,
        password=password,
        ssl=ssl if _ws_url(url).lower().startswith("wss:") else None,
    )
    return await _Doctor(endpoint, timeout).run()


def _ws_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    mapped = {"http": "ws", "https": "wss"}.get(scheme.lower())
    return f"{mapped}{sep}{rest}" if mapped and sep else url


class _Doctor(PlainChecks, SocketChecks):
    async def run(self) -> list[Finding]:
        answer = await self._endpoint_check()
        if answer is None:
            return self.findings
        self._clock_from_date(answer)
        upgrade = asyncio.ensure_future(self._websocket_checks())
        plain = asyncio.gather(self._slash_check(), self._origin_check())
        welcomed = asyncio.ensure_future(self.welcomed.wait())
        # the event stream is watched alongside the idle connection, once the heartbeat is known
        await asyncio.wait((upgrade, welcomed), return_when=asyncio.FIRST_COMPLETED)
        welcomed.cancel()
        stream = asyncio.ensure_future(self._stream_check())
        await asyncio.gather(upgrade, plain, stream)
        self.only_sse(upgrade.result(), stream.result())
        order = ["tls", "endpoint", "slash", "upgrade", "compression", "heartbeat", "stream"]
        order += ["origin", "clock"]
        self.findings.sort(key=lambda f: order.index(f.check) if f.check in order else 99)
        return self.findings

    # ------------------------------------------------------------------ plain HTTP
