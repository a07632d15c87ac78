"""A client's connection: opened, held, let go, and reopened with backoff after a loss.

:class:`Connector` owns the client's current :class:`~livepanel.client.link.Link`
and everything about getting one: an attempt (TCP, TLS, the handshake, the
redirects within the origin, ``welcome``) within ``open_timeout``, and the
reconnect loop (full-jitter exponential backoff, the statuses worth another
try, giving up). What the frames mean stays with
:class:`~livepanel.client.stream.ClientStream`, which it feeds while a
connection opens.
"""

from __future__ import annotations

import asyncio
import logging
import time

from livepanel.client.endpoint import MAX_REDIRECTS, Endpoint, Redirected
from livepanel.client.errors import (
    AuthenticationError,
    ConnectionFailed,
    HandshakeRejected,
    OpenTimeout,
    PermissionDenied,
)
from livepanel.client.link import Link, open_socket, refusal
from livepanel.client.retry import hinted_wait
from livepanel.client.stream import ClientStream, Phase
from livepanel.client.wire import ClientWire, Rejected

__all__ = ["RETRYABLE_STATUS", "Connector"]

logger = logging.getLogger("livepanel")

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Handshake answers worth another try after a backoff; any other refusal is final."""


class Connector:
    """Opens, holds and reopens one client's connection.

    Args:
        endpoint: where to connect (a redirect within the origin replaces it).
        stream: the client's stream, fed while a connection opens.
        reconnect: reopen a lost connection (``False``: give up at once).
        max_retries: reconnection attempts in a row before giving up.
        open_timeout: seconds for one attempt to connect, handshake and get ``welcome``.
        backoff_initial: the first retry waits up to this many seconds.
        backoff_max: no retry waits longer than this.

    Raises:
        ValueError: a retry setting out of range.

    Example::

        connector = Connector(Endpoint.parse(url), ClientStream(url))
        await connector.open_first()  # raises AuthenticationError, OpenTimeout...
        link = connector.link
    """

    def __init__(
        self,
        endpoint: Endpoint,
        stream: ClientStream,
        *,
        reconnect: bool = True,
        max_retries: int = 10,
        open_timeout: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if open_timeout <= 0:
            raise ValueError("open_timeout must be > 0 seconds")
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("backoff_initial must be > 0 and backoff_max >= backoff_initial")
        self.endpoint = endpoint
        self.reconnect = reconnect
        self.max_retries = max_retries
        self.open_timeout = float(open_timeout)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.reconnects = 0
        """How many times a lost connection has been reopened."""
        self._stream = stream
        self._link: Link | None = None
        self._disconnected = asyncio.Event()

    @property
    def url(self) -> str:
        """The endpoint's URL without its password."""
        return self.endpoint.url

    @property
    def link(self) -> Link | None:
        """The current connection (opening or open), or ``None``."""
        return self._link

    # ------------------------------------------------------------------ letting go

    def settle(self) -> None:
        """Let go of a connection that has ended, and say what comes next."""
        if self._link is None:
            return
        if self._stream.phase.done:
            self.drop(abort=False)
            if self._stream.phase is Phase.ENDED:
                logger.info("livepanel: %s closed the connection", self.url)
        elif self._stream.lost_reason is not None:
            self.drop(abort=True)
            if self.reconnect:
                self._stream.reconnecting()

    def drop(self, *, abort: bool) -> None:
        """Forget the current connection and close its socket."""
        link, self._link = self._link, None
        if link is not None:
            link.drop(abort=abort)
        self._disconnected.set()

    async def wait_disconnected(self, timeout: float) -> None:
        """Wait until no connection is held (another task lets it go), at most ``timeout``
        seconds; then cut it."""
        try:
            await asyncio.wait_for(self._disconnected.wait(), timeout)
        except asyncio.TimeoutError:
            self.drop(abort=True)

    # ------------------------------------------------------------------ opening

    async def open_first(self) -> None:
        """Open the first connection: any failure is final (no retries), except a 429 that
        says when to come back (a worker over its admission rate): that hint is waited
        out, with jitter, up to ``max_retries`` times.

        Raises:
            AuthenticationError: 401. PermissionDenied: 403.
            HandshakeRejected: another HTTP refusal, or a 429 without a hint.
            OpenTimeout: no ``welcome`` within ``open_timeout``.
            ConnectionFailed: the server cannot be reached.
        """
        try:
            for hinted in range(self.max_retries + 1):
                try:
                    await self._open()
                    break
                except HandshakeRejected as exc:
                    if exc.retry_after is None or hinted == self.max_retries:
                        raise
                    delay = hinted_wait(exc.retry_after)
                    logger.info(
                        "livepanel: %s: HTTP %d; the server asks to come back in %.1fs",
                        self.url,
                        exc.status,
                        delay,
                    )
                    await asyncio.sleep(delay)
        except (AuthenticationError, PermissionDenied):
            self._stream.refused()
            raise
        except BaseException:
            self._stream.closed()
            raise
        if self._stream.phase not in (Phase.CLOSING, Phase.CLOSED):  # close() came first
            logger.info("livepanel: connected to %s", self.url)

    async def reopen(self, wakeup: asyncio.Event) -> None:
        """Reopen a lost connection, backing off between attempts; return early once
        ``wakeup`` is set (``close()`` was called).

        Raises:
            ConnectionFailed: ``reconnect=False``, or ``max_retries`` attempts failed.
            AuthenticationError: 401. PermissionDenied: 403.
            HandshakeRejected: a refusal that another try would not change.
        """
        reason = self._stream.lost_reason or "connection lost"
        if not self.reconnect:
            self._stream.closed()
            raise ConnectionFailed(f"{self.url}: {reason} (reconnect=False)")
        self._stream.reconnecting()
        hint = self._stream.retry_hint
        while True:
            if hint is not None:  # the server said when: not a failed attempt, no backoff step
                delay: float | None = hinted_wait(hint)
                logger.info(
                    "livepanel: %s: %s; the server asks to come back in %.1fs",
                    self.url,
                    reason,
                    delay,
                )
                hint = None
            else:
                delay = self._stream.next_delay(
                    self.backoff_initial, self.backoff_max, self.max_retries, time.monotonic()
                )
                if delay is not None:
                    logger.info(
                        "livepanel: %s: %s; reconnecting in %.1fs (attempt %d of %d)",
                        self.url,
                        reason,
                        delay,
                        self._stream.attempt,
                        self.max_retries,
                    )
            if delay is None:
                self._stream.closed()
                raise ConnectionFailed(
                    f"{self.url}: gave up after {self.max_retries} reconnection attempts; "
                    f"last error: {reason}"
                )
            if await _sleep(wakeup, delay):
                return  # close() was called
            try:
                await self._open()
            except (AuthenticationError, PermissionDenied) as exc:
                self._stream.refused()
                logger.warning("livepanel: %s refused the reconnection: %s", self.url, exc)
                raise
            except HandshakeRejected as exc:
                if exc.status not in RETRYABLE_STATUS:
                    self._stream.closed()
                    raise
                reason = f"HTTP {exc.status}"
                hint = exc.retry_after
            except ConnectionFailed as exc:
                reason = str(exc)
            else:
                if self._stream.phase in (Phase.CLOSING, Phase.CLOSED):
                    return  # close() was called while reopening
                self.reconnects += 1
                since = self._stream.asked_since
                after = f", resuming after {since}" if since else ""
                logger.info("livepanel: reconnected to %s%s", self.url, after)
                return

    async def _open(self) -> None:
        """One attempt: TCP, TLS, the handshake and ``welcome``, within ``open_timeout``.

        A redirect to another path of the same origin (``Mount("/ws")`` answers
        ``/ws`` with 307 to ``/ws/``) is followed, at most ``MAX_REDIRECTS`` times.
        """
        try:
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    await asyncio.wait_for(self._handshake(), self.open_timeout)
                except Redirected as moved:
                    self.drop(abort=True)
                    path = moved.endpoint.path
                    logger.info("livepanel: %s redirects to %s; following", self.url, path)
                    self.endpoint = moved.endpoint
                    continue
                break
            else:
                raise HandshakeRejected(
                    307, f"{self.url}: more than {MAX_REDIRECTS} redirects; not followed"
                )
            self.settle()  # welcome and a close may come in one read
        except asyncio.TimeoutError:
            self.drop(abort=True)
            raise OpenTimeout(
                f"{self.url}: the server did not open the connection within "
                f"{self.open_timeout:g}s (open_timeout)"
            ) from None
        except OSError as exc:
            self.drop(abort=True)
            raise ConnectionFailed(f"cannot connect to {self.url}: {exc}") from exc
        except BaseException:
            self.drop(abort=True)
            raise

    async def _handshake(self) -> None:
        endpoint = self.endpoint
        reader, writer = await open_socket(endpoint)
        self._disconnected.clear()
        target = endpoint.target(self._stream.begin())
        wire = ClientWire(endpoint.host_header, target, endpoint.headers)
        link = self._link = Link(reader, writer, wire)
        await link.flush()
        while self._stream.phase.opening:  # until welcome (or close() from another task)
            for output in link.receive(await link.read()):
                if isinstance(output, Rejected):
                    raise await refusal(endpoint, output, target)
                self._stream.receive(output, time.monotonic())
            if self._link is link:  # not let go by close() meanwhile
                await link.flush()
            lost = self._stream.lost_reason
            if self._stream.phase.opening and lost is not None:
                raise ConnectionError(f"the server ended the connection before welcome ({lost})")


async def _sleep(wakeup: asyncio.Event, delay: float) -> bool:
    """Wait ``delay`` seconds; return ``True`` early when ``wakeup`` is set."""
    try:
        await asyncio.wait_for(wakeup.wait(), delay)
    except asyncio.TimeoutError:
        return False
    return True
