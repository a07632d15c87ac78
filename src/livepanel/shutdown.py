"""Closing every connection with 1001 when the server process is told to stop.

No ASGI server tells the application before it ends its WebSockets: uvicorn
closes them itself with 1012 and sends ``lifespan.shutdown`` afterwards;
hypercorn keeps them open for its graceful timeout, then cancels them. So
livepanel listens where the news arrives first, the signal. :func:`watch`
chains a handler in front of the one the server installed for ``SIGTERM`` and
``SIGINT``: on the signal, every watched app closes its connections with 1001
(bounded by :data:`SIGNAL_GRACE`), and then the server's own handler runs as
if nothing had happened. See ``docs/deployment.md``.

livepanel stays out of a process where nothing handles ``SIGTERM`` (a script
or a test under ``asyncio.run``), leaves alone a signal nobody handles (the
default action, or ignored), and a server running outside the main thread.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from types import FrameType
from typing import Any, Protocol

__all__ = ["SIGNAL_GRACE", "watch"]

logger = logging.getLogger("livepanel")

SIGNAL_GRACE = 2.0
"""Seconds a signal waits for the connections to close before the server's handler runs."""


class _Closable(Protocol):
    def shutdown(self, code: int = ..., timeout: float = ...) -> Awaitable[None]: ...


_Handler = Callable[[int, "FrameType | None"], Any]

_watched: weakref.WeakKeyDictionary[_Closable, frozenset[int]] = weakref.WeakKeyDictionary()
_chained: dict[int, _Handler] = {}  # signal -> the handler ours runs after
_draining: set[int] = set()  # signals whose drain is under way: the next ones pass straight
_tasks: set[asyncio.Task[None]] = set()


def watch(app: _Closable, signals: Iterable[int]) -> None:
    """Have ``app.shutdown()`` run before the server's own handler of each of ``signals``.

    Called from the server's event loop; a no-op outside the main thread.
    Cheap enough to call on every handshake: it re-chains only when the
    server has installed a new handler since. :class:`~livepanel.LivePanelApp`
    calls it with its ``shutdown_signals`` at startup and on each connection.

    Example::

        watch(app, (signal.SIGTERM, signal.SIGINT))  # app.shutdown(1001, SIGNAL_GRACE) first
    """
    wanted = frozenset(signals)
    if not wanted or threading.current_thread() is not threading.main_thread():
        return
    if not callable(signal.getsignal(signal.SIGTERM)):
        return  # no server here stops gracefully (a script, a test's asyncio.run): stay out
    _watched[app] = wanted
    for sig in wanted:
        current = signal.getsignal(sig)
        if current is _on_signal or not callable(current):
            continue  # ours already, or SIG_DFL / SIG_IGN / set outside Python: leave it
        if current is signal.default_int_handler:
            continue  # plain KeyboardInterrupt: no server is shutting down gracefully
        try:
            signal.signal(sig, _on_signal)
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            continue
        _chained[sig] = current


def _on_signal(sig: int, frame: FrameType | None) -> None:
    previous = _chained.get(sig)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    apps = [app for app, signals in list(_watched.items()) if sig in signals]
    if loop is None or not apps or _draining:
        _pass_on(previous, sig, frame)  # a second signal goes straight to the server
        return
    _draining.add(sig)
    task = loop.create_task(_drain_then_pass_on(apps, previous, sig, frame))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _drain_then_pass_on(
    apps: list[_Closable], previous: _Handler | None, sig: int, frame: FrameType | None
) -> None:
    try:
        logger.info("livepanel: signal %d: closing WebSocket connections with 1001", sig)
        closing = [asyncio.ensure_future(app.shutdown(1001, SIGNAL_GRACE)) for app in apps]
        done, late = await asyncio.wait(closing, timeout=SIGNAL_GRACE + 0.5)
        for task in late:  # the server's handler must run, whatever an app does
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.warning(
                    "livepanel: closing connections on signal %d failed: %r", sig, task.exception()
                )
    finally:
        _draining.discard(sig)
        _pass_on(previous, sig, frame)


def _pass_on(previous: _Handler | None, sig: int, frame: FrameType | None) -> None:
    if previous is None:  # pragma: no cover - only reachable when chaining failed half-way
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)
        return
    previous(sig, frame)
