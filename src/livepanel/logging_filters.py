"""Logging filters for the servers livepanel runs on.

uvicorn's ``websockets-sansio`` implementation (the one its default,
``--ws auto``, picks when ``websockets`` is installed, as of uvicorn 0.54)
logs ``ERROR: ASGI callable returned without completing handshake.`` after
every handshake an application refuses with an HTTP response (the
``websocket.http.response`` extension), although the refusal reached the
client as sent; uvicorn pull request #3138 fixes it. Every 401 then pages
whoever alerts on ERROR. :func:`quiet_refused_handshakes` drops exactly those
lines: only for handshakes livepanel refused, so an application that really
returns without answering a handshake is still
logged. See ``docs/deployment.md``.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

__all__ = [
    "REFUSED_HANDSHAKE_MESSAGE",
    "RefusedHandshakeFilter",
    "mark_handshake_refused",
    "quiet_refused_handshakes",
]

REFUSED_HANDSHAKE_MESSAGE = "ASGI callable returned without completing handshake."
"""The message uvicorn's ``websockets-sansio`` logs at ERROR after a refused handshake."""

# set inside the connection's task, which is where the server logs after the app returns
_refused: ContextVar[bool] = ContextVar("livepanel_handshake_refused", default=False)


def mark_handshake_refused() -> None:
    """Record that this connection's handshake was refused on purpose, with an HTTP response.

    :class:`~livepanel.LivePanelApp` calls it for every denial; call it in an
    ASGI app of your own that refuses handshakes the same way, so the filter
    quiets those too. It marks the current task's context only.

    Example::

        async def app(scope, receive, send):
            await receive()
            mark_handshake_refused()
            await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b""})
    """
    _refused.set(True)


class RefusedHandshakeFilter(logging.Filter):
    """Drops the server's "returned without completing handshake" ERROR for refused handshakes.

    A record passes unless its message is :data:`REFUSED_HANDSHAKE_MESSAGE`
    and the connection it is about was refused with an HTTP response
    (:func:`mark_handshake_refused`). Attach it to the ``uvicorn.error``
    logger, or to a handler in a logging configuration file.

    Example, in a ``uvicorn --log-config`` dictionary::

        "filters": {"livepanel": {"()": "livepanel.logging_filters.RefusedHandshakeFilter"}},
        "loggers": {"uvicorn.error": {"level": "INFO", "filters": ["livepanel"], ...}},
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """``False`` for the spurious line about a refused handshake, else ``True``."""
        return not (record.msg == REFUSED_HANDSHAKE_MESSAGE and _refused.get())


def quiet_refused_handshakes(logger: str = "uvicorn.error") -> RefusedHandshakeFilter:
    """Attach a :class:`RefusedHandshakeFilter` to ``logger`` (once); return it.

    Call it once, anywhere before or after uvicorn configures logging (a
    filter on the logger survives uvicorn's own configuration), e.g. next to
    the app in the module uvicorn imports.

    Example::

        from livepanel.logging_filters import quiet_refused_handshakes

        quiet_refused_handshakes()
        app = LivePanelApp(auth=BasicAuth.from_env())
    """
    target = logging.getLogger(logger)
    for existing in target.filters:
        if isinstance(existing, RefusedHandshakeFilter):
            return existing
    installed = RefusedHandshakeFilter()
    target.addFilter(installed)
    return installed
