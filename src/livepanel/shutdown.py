"""Closing every connection with 1012 when the server process is told to stop.

No ASGI server tells the application before it ends its WebSockets: uvicorn
closes them itself with 1012 (no hint of when to come back) and sends
``lifespan.shutdown`` afterwards;
hypercorn keeps them open for its graceful timeout, then cancels them. So
livepanel listens where the news arrives first, the signal. :class:`SignalWatch`
chains a handler in front of the one the server installed for ``SIGTERM`` and
``SIGINT``: on the signal, every watched app closes its connections with 1012
and ``retry_after=<seconds>``, spread over its ``reconnect_window`` (bounded by
:data:`SIGNAL_GRACE`), and then the server's own handler runs as
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
from collections.abc import Awaitable, Callable, Iterable
from types import FrameType
from typing import Any, Protocol

from livepanel.protocol import CLOSE_SERVICE_RESTART

__all__ = ["SIGNAL_GRACE", "SignalWatch"]

logger = logging.getLogger("livepanel")

SIGNAL_GRACE = 2.0
"""Seconds a signal waits for the connections to close before the server's handler runs."""


class _Closable(Protocol):
    def shutdown(self, code: int = ..., timeout: float = ...) -> Awaitable[None]: ...


_Handler = Callable[[int, "FrameType | None"], Any]


class SignalWatch:
    """One app's handlers for its shutdown signals, each chained in front of the server's.

    Each app owns one; :class:`~livepanel.LivePanelApp` installs it when a
    server starts it (``lifespan.startup``) or on its first handshake, not on
    every one. A signal runs ``app.shutdown(1012, SIGNAL_GRACE)``, then the
    handler that was there before ours, as if nothing had happened; a second
    signal while the connections close goes straight through.

    Example::

        watch = SignalWatch(app, (signal.SIGTERM, signal.SIGINT))
        watch.install()  # from the server's event loop, in the main thread
    """

    def __init__(self, app: _Closable, signals: Iterable[int]) -> None:
        self.app = app
        self.signals = frozenset(signals)
        self.installed = False
        self._chained: dict[int, _Handler] = {}  # signal -> the handler ours runs after
        self._closing: set[int] = set()  # signals whose connections are being closed
        self._tasks: set[asyncio.Task[None]] = set()

    def install(self) -> None:
        """Chain our handler in front of the server's; a no-op where no server handles
        ``SIGTERM`` (a script, a test under ``asyncio.run``) or outside the main thread."""
        if not self.signals or threading.current_thread() is not threading.main_thread():
            return
        if not callable(signal.getsignal(signal.SIGTERM)):
            return  # no server here stops gracefully: stay out
        self.installed = True
        for sig in self.signals:
            current = signal.getsignal(sig)
            if current == self._on_signal or not callable(current):
                continue  # ours already, or SIG_DFL / SIG_IGN / set outside Python: leave it
            if current is signal.default_int_handler:
                continue  # plain KeyboardInterrupt: no server is shutting down gracefully
            try:
                signal.signal(sig, self._on_signal)
            except (ValueError, OSError):  # pragma: no cover - not the main interpreter
                continue
            self._chained[sig] = current

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        previous = self._chained.get(sig)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or self._closing:
            _pass_on(previous, sig, frame)  # a second signal goes straight to the server
            return
        self._closing.add(sig)
        task = loop.create_task(self._close_then_pass_on(previous, sig, frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_then_pass_on(
        self, previous: _Handler | None, sig: int, frame: FrameType | None
    ) -> None:
        try:
            logger.info("livepanel: signal %d: closing WebSocket connections with 1012", sig)
            closing = asyncio.ensure_future(self.app.shutdown(CLOSE_SERVICE_RESTART, SIGNAL_GRACE))
            done, late = await asyncio.wait({closing}, timeout=SIGNAL_GRACE + 0.5)
            for task in late:  # the server's handler must run, whatever the app does
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    logger.warning(
                        "livepanel: closing connections on signal %d failed: %r",
                        sig,
                        task.exception(),
                    )
        finally:
            self._closing.discard(sig)
            _pass_on(previous, sig, frame)


def _pass_on(previous: _Handler | None, sig: int, frame: FrameType | None) -> None:
    if previous is None:  # pragma: no cover - only reachable when chaining failed half-way
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)
        return
    previous(sig, frame)
