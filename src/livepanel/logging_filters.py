"""Logging filters for the servers livepanel runs on.

uvicorn's ``websockets-sansio`` implementation (the one its default,
``--ws auto``, picks when ``websockets`` is installed), before uvicorn 0.55, logs
``ERROR: ASGI callable returned without completing handshake.`` after
every handshake an application refuses with an HTTP response (the
``websocket.http.response`` extension), although the refusal reached the
client as sent; uvicorn pull request #3138, released in 0.55, fixes it. Every
401 then pages whoever alerts on ERROR. :func:`quiet_refused_handshakes` drops
exactly those lines, and only on the uvicorn releases that write them: only for
handshakes livepanel refused, so an application that really returns without
answering a handshake is still logged. See ``docs/deployment.md``.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from importlib import metadata

__all__ = [
    "REFUSED_HANDSHAKE_MESSAGE",
    "RefusedHandshakeFilter",
    "mark_handshake_refused",
    "quiet_refused_handshakes",
    "uvicorn_logs_refused_handshakes",
]

REFUSED_HANDSHAKE_MESSAGE = "ASGI callable returned without completing handshake."
"""The message uvicorn's ``websockets-sansio`` logs at ERROR after a refused handshake."""

FIXED_IN_UVICORN = (0, 55)
"""The first uvicorn release that no longer logs :data:`REFUSED_HANDSHAKE_MESSAGE` for a refusal."""


def uvicorn_logs_refused_handshakes(version: str | None = None) -> bool:
    """Whether this uvicorn (or ``version``) logs the spurious ERROR after a refused handshake.

    ``False`` when uvicorn is not installed or is 0.55 or later; a version
    string that does not start with two numbers counts as fixed (a release
    built from a newer source tree).

    Example::

        >>> uvicorn_logs_refused_handshakes("0.34.0"), uvicorn_logs_refused_handshakes("0.55.1")
        (True, False)
    """
    if version is None:
        try:
            version = metadata.version("uvicorn")
        except metadata.PackageNotFoundError:
            return False
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None:
        return False
    return (int(found[1]), int(found[2])) < FIXED_IN_UVICORN


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


def quiet_refused_handshakes(
    logger: str = "uvicorn.error", *, force: bool = False
) -> RefusedHandshakeFilter | None:
    """Attach a :class:`RefusedHandshakeFilter` to ``logger`` (once) where it is needed.

    Call it once, anywhere before or after uvicorn configures logging (a
    filter on the logger survives uvicorn's own configuration), e.g. next to
    the app in the module uvicorn imports. On uvicorn 0.55 and later, which
    no longer write the line, it attaches nothing and returns ``None``
    (``force=True`` attaches it anyway, e.g. for another server with the same
    message).

    Example::

        from livepanel.logging_filters import quiet_refused_handshakes

        quiet_refused_handshakes()
        app = LivePanelApp(auth=BasicAuth.from_env())
    """
    if not (force or uvicorn_logs_refused_handshakes()):
        return None
    target = logging.getLogger(logger)
    for existing in target.filters:
        if isinstance(existing, RefusedHandshakeFilter):
            return existing
    installed = RefusedHandshakeFilter()
    target.addFilter(installed)
    return installed
