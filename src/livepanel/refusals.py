"""Saying no: a :class:`~livepanel.handshake.Denial` as an HTTP response, or a close before accept.

A refused WebSocket handshake gets a real HTTP response through the ASGI
``websocket.http.response`` extension when the server offers it, else
``websocket.close`` 1008 before accept (a refusal over the admission rate is
accepted, then closed with 1013 and ``retry_after=<seconds>``, so the client
still learns when to come back); an event stream or a plain HTTP
request gets the response itself. The body is ``{"error", "message"}``. Each
refusal is logged at most once per client address and interval
(:class:`~livepanel.throttle.RefusalLog`), so a prober cannot fill the logs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from asgiref.typing import WWWScope

from livepanel.handshake import Denial, client_label, single_header
from livepanel.logging_filters import mark_handshake_refused
from livepanel.origin import OriginPolicy
from livepanel.protocol import CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER
from livepanel.throttle import RefusalLog, client_address

__all__ = ["Refusals", "cors_headers", "denial_response", "retry_reason"]

logger = logging.getLogger("livepanel")

_HTTP_EXTENSION = "websocket.http.response"


def denial_response(denial: Denial) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers answering ``denial``.

    Example::

        >>> from livepanel.handshake import FORBIDDEN
        >>> denial_response(FORBIDDEN)[0]
        b'{"error": "forbidden", "message": "this user may not connect"}'
    """
    body = json.dumps({"error": denial.code, "message": denial.message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *denial.headers,
    ]
    return body, headers


def retry_reason(seconds: float) -> str:
    """A close reason carrying a retry hint, as 1012 and 1013 say it: ``retry_after=<seconds>``.

    Example::

        >>> retry_reason(2.349)
        'retry_after=2.35'
    """
    return f"retry_after={seconds:.2f}"


def cors_headers(scope: WWWScope, policy: OriginPolicy) -> list[tuple[bytes, bytes]]:
    """CORS headers for an event stream requested by a page of an allowed origin, so that
    its ``fetch`` may read it (a WebSocket needs none); none for any other request.

    Example::

        >>> scope = {"headers": [(b"host", b"panel.test"), (b"origin", b"http://panel.test")]}
        >>> cors_headers(scope, OriginPolicy(None))[0]
        (b'access-control-allow-origin', b'http://panel.test')
    """
    origin, single = single_header(scope, b"origin")
    host, _ = single_header(scope, b"host")
    if not origin or not single or not policy.allows(origin, host):
        return []
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"origin"),
    ]


class Refusals:
    """Sends one endpoint's refusals and logs them, a line per address and interval.

    Example::

        refusals = Refusals()
        await refusals.refuse_websocket(scope, send, denial)
    """

    def __init__(self) -> None:
        self.log = RefusalLog()

    async def refuse_websocket(self, scope: WWWScope, send: Any, denial: Denial) -> None:
        """Refuse a WebSocket handshake: an HTTP response where the server offers the
        extension, else close 1008 before accept (over the admission rate: accept, then
        close 1013 with the retry hint).

        Example::

            await refusals.refuse_websocket(scope, send, FORBIDDEN)
        """
        self.note(scope, denial)
        if _HTTP_EXTENSION in (scope.get("extensions") or {}):
            mark_handshake_refused()  # for quiet_refused_handshakes() (uvicorn's sansio)
            body, headers = denial_response(denial)
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": denial.status,
                    "headers": headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        elif denial.retry_after is not None:
            # no HTTP answer here: a close reason is the only place a hint fits
            await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
            reason = retry_reason(denial.retry_after)
            await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER, "reason": reason})
        else:
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION, "reason": ""})

    async def refuse_http(
        self,
        scope: WWWScope,
        send: Any,
        denial: Denial,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Refuse a plain HTTP request (a probe, or an event stream) with the denial's status.

        Example::

            await refusals.refuse_http(scope, send, denial, cors_headers(scope, policy))
        """
        self.note(scope, denial)
        body, headers = denial_response(denial)
        headers += extra or []
        await send({"type": "http.response.start", "status": denial.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def note(self, scope: WWWScope, denial: Denial) -> None:
        """Log the refusal, unless this address had its line within the interval.

        Example::

            refusals.note(scope, denial)
        """
        if not denial.logged:
            return
        # one line per address and interval: a prober cannot fill the logs
        earlier = self.log.note(client_address(scope.get("client")))
        if earlier is None:
            return
        logger.info(
            "livepanel: refused %s with %d (%s)%s",
            client_label(scope),
            denial.status,
            denial.code,
            f"; {earlier} more refusal(s) from this address not logged since the last line"
            if earlier
            else "",
        )
