"""A client's place in the stream, without I/O: server frames in, events and decisions out.

:class:`ClientStream` owns everything a client knows about the stream across
connections: its :class:`Phase` (the transitions are here and nowhere else),
the ids it resumes from, the heartbeat the server announced, the events ready
to be yielded, the acks waiting to be sent, the state (``state=True``) and the
count of reconnection attempts. The asyncio :class:`~livepanel.client.Client`
feeds it what :class:`~livepanel.client.wire.ClientWire` reads and does what
it answers; every rule here is a plain unit test.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from livepanel.client.errors import ResumeUnavailable
from livepanel.client.retry import close_hint
from livepanel.client.wire import Closed, FrameReceived, InvalidFrame, WireEvent
from livepanel.events import Event
from livepanel.frames import AckMessage, SubscribeMessage, SubscribePayload
from livepanel.protocol import CLOSE_NORMAL, parse_id
from livepanel.state import ClientState

__all__ = [
    "ACK_INTERVAL",
    "DEFAULT_HEARTBEAT",
    "STABLE_AFTER",
    "ClientStream",
    "Phase",
    "Status",
]

logger = logging.getLogger("livepanel")

Status = Literal["connecting", "open", "catching_up", "reconnecting", "auth_failed", "closed"]
"""A client's state, :attr:`Client.status <livepanel.client.Client.status>`: the same states
as ``livepanel.js``'s. ``"catching_up"``: open, with a replay or the state still on its way."""

DEFAULT_HEARTBEAT = 25.0
"""Seconds assumed between server frames until ``welcome`` says otherwise."""
STABLE_AFTER = 5.0
"""Seconds a connection must stay open before its loss starts a fresh count of retries."""
ACK_INTERVAL = 0.2
"""Acks are coalesced to at most one per this many seconds (the server rate-limits)."""


class Phase(enum.Enum):
    """Where a client is; :attr:`status` is what users see (livepanel.js's names).

    Example::

        >>> Phase.ENDED.status, Phase.ENDED.done
        ('closed', True)
    """

    CONNECTING = "connecting"  # the first connection is opening, until its welcome
    OPEN = "open"  # welcomed: events flow
    RECONNECTING = "reconnecting"  # lost: backing off, or reopening until the next welcome
    ENDED = "ended"  # the server closed the stream cleanly (1000): iteration ends
    CLOSING = "closing"  # close() was called: the closing handshake runs
    CLOSED = "closed"  # gave up, refused for good, or closed: nothing more happens
    AUTH_FAILED = "auth_failed"  # credentials refused (401/403): final, never retried

    @property
    def status(self) -> Status:
        """The name users see."""
        return _STATUS[self]

    @property
    def opening(self) -> bool:
        """A connection is being opened and has not been welcomed yet."""
        return self in (Phase.CONNECTING, Phase.RECONNECTING)

    @property
    def done(self) -> bool:
        """Iteration is over: the stream ended, or close() was called, or the client gave up."""
        return self in (Phase.ENDED, Phase.CLOSING, Phase.CLOSED, Phase.AUTH_FAILED)


_STATUS: dict[Phase, Status] = {
    Phase.CONNECTING: "connecting",
    Phase.OPEN: "open",
    Phase.RECONNECTING: "reconnecting",
    Phase.ENDED: "closed",
    Phase.CLOSING: "closed",
    Phase.CLOSED: "closed",
    Phase.AUTH_FAILED: "auth_failed",
}


class ClientStream:
    """One client's view of the event stream, across its connections.

    Args:
        url: the endpoint's URL without its password, for log lines.
        types: the type globs to ask for (``None``: everything).
        since: resume after this id on the first connection.
        batch: ask for batched frames (``?batch=1``).
        state: ask for the state on connect and keep it in :attr:`state`.
        on_status: called with the new :data:`Status` each time it changes.

    Example::

        >>> stream = ClientStream("ws://localhost/ws", since="e1:4")
        >>> stream.begin()
        [('since', 'e1:4'), ('batch', '1')]
        >>> stream.receive(FrameReceived({"type": "welcome", "payload": {"lastEventId": "e1:9"}}),
        ...                now=0.0)
        >>> stream.phase.status
        'open'
        >>> stream.receive(FrameReceived({"type": "session.killed", "id": "e1:5",
        ...     "timestamp": "2026-02-21T10:00:00.000Z", "payload": {}}), now=0.1)
        >>> stream.take().id, stream.resume_from
        ('e1:5', 'e1:5')
    """

    def __init__(
        self,
        url: str,
        *,
        types: tuple[str, ...] | None = None,
        since: str | None = None,
        batch: bool = True,
        state: bool = False,
        on_status: Callable[[Status], None] | None = None,
    ) -> None:
        self.url = url
        self.types = types
        self.batch = batch
        self.state: ClientState | None = ClientState() if state else None
        self._phase = Phase.CONNECTING
        self._on_status = on_status
        self._shown: Status = "connecting"
        self._catch_up: str | None = None  # while catching up: the id that ends it ("": a frame)
        self.heartbeat = DEFAULT_HEARTBEAT
        self.connection_id: str | None = None
        self.last_event_id: str | None = None
        self.resume_from = since  # where the next connection resumes
        self.asked_since: str | None = None  # the since the current connection asked for
        self.lost_reason: str | None = None  # why the current connection is being let go
        self.attempt = 0  # reconnection attempts in a row
        self.retry_hint: float | None = None  # seconds the server asked to wait before returning
        self.last_frame_at: float | None = None  # the clock's reading at the newest live frame
        self._welcomed_at: float | None = None  # the clock's reading at this connection's welcome
        self._conn_last_id: str | None = None  # the newest id this connection has seen
        self._ready: deque[Event | ResumeUnavailable] = deque()
        self._ack_pending: str | None = None
        self._ack_sent_at = float("-inf")

    # ------------------------------------------------------------------ status

    @property
    def phase(self) -> Phase:
        """Where the client is (its transitions are this class's methods)."""
        return self._phase

    @phase.setter
    def phase(self, phase: Phase) -> None:
        self._phase = phase
        if phase is not Phase.OPEN:
            self._catch_up = None
        self._status_changed()

    @property
    def status(self) -> Status:
        """What users see: the phase's name, or ``"catching_up"`` while open with a replay
        or the state in flight."""
        if self._phase is Phase.OPEN and self._catch_up is not None:
            return "catching_up"
        return self._phase.status

    def _status_changed(self) -> None:
        status = self.status
        if status == self._shown:
            return
        self._shown = status
        if self._on_status is not None:
            try:
                self._on_status(status)
            except Exception:  # a user's callback must not break the client
                logger.exception("livepanel: the on_status callback failed")

    def _caught_up(self) -> None:
        if self._catch_up is not None:
            self._catch_up = None
            self._status_changed()

    # ------------------------------------------------------------------ a connection

    def begin(self) -> list[tuple[str, str]]:
        """A new connection starts: the connect parameters it asks with (``types``,
        ``since``, ``batch``, ``state``)."""
        params = []
        if self.types is not None:
            params.append(("types", ",".join(self.types)))
        if self.resume_from is not None:
            params.append(("since", self.resume_from))
        if self.batch:
            params.append(("batch", "1"))
        if self.state is not None:
            params.append(("state", "1"))
        self.asked_since = self.resume_from
        self.lost_reason = None
        self.retry_hint = None
        self._conn_last_id = None
        return params

    def receive(self, output: WireEvent, now: float) -> None:
        """Act on what the wire read (``now``: a monotonic clock's reading)."""
        if isinstance(output, FrameReceived):
            self._on_frame(output.data, now)
        elif isinstance(output, Closed):
            if self.phase.done:
                pass  # the answer to our close(), or after the end
            elif output.code == CLOSE_NORMAL and self.phase is Phase.OPEN:
                self.phase = Phase.ENDED
            else:
                reason = f": {output.reason}" if output.reason else ""
                self.lose(f"closed with code {output.code}{reason}")
                self.retry_hint = close_hint(output.code, output.reason)
        elif isinstance(output, InvalidFrame):
            logger.warning("livepanel: skipped a server frame from %s (%s)", self.url, output.error)

    def lose(self, reason: str) -> None:
        """The current connection is lost; the first reason given is the one reported."""
        if self.lost_reason is None:
            self.lost_reason = reason

    def silent(self) -> None:
        """No frame came for two heartbeat intervals: the connection counts as lost."""
        self.lost_reason = f"no frame for {2 * self.heartbeat:g}s (two heartbeat intervals)"

    def take(self) -> Event | ResumeUnavailable | None:
        """The next event to yield, the gap to raise, or ``None``."""
        return self._ready.popleft() if self._ready else None

    # ------------------------------------------------------------------ the client's moves

    def reconnecting(self) -> None:
        """The connection is lost and will be reopened."""
        self.phase = Phase.RECONNECTING

    def closing(self) -> bool:
        """``close()`` was called; ``False`` when the client was already closing or closed."""
        if self.phase in (Phase.CLOSING, Phase.CLOSED, Phase.AUTH_FAILED):
            return False
        self.phase = Phase.CLOSING
        return True

    def closed(self) -> None:
        """Closed, given up or refused for good: nothing more happens."""
        self.phase = Phase.CLOSED

    def refused(self) -> None:
        """The server refused the credentials (401/403): final, never retried."""
        self.phase = Phase.AUTH_FAILED

    def next_delay(
        self, initial: float, maximum: float, max_retries: int, now: float
    ) -> float | None:
        """The wait before the next reconnection attempt (full jitter on a capped exponential
        step), or ``None`` when ``max_retries`` attempts in a row have failed."""
        welcomed_at, self._welcomed_at = self._welcomed_at, None
        if welcomed_at is not None and now - welcomed_at >= STABLE_AFTER:
            # only a connection that stayed up earns a fresh count: one that is welcomed and
            # dropped at once (a flapping or hostile server) uses the retries up
            self.attempt = 0
        if self.attempt >= max_retries:
            return None
        step = min(maximum, initial * 2**self.attempt)
        self.attempt += 1
        return random.uniform(0, step)

    # ------------------------------------------------------------------ client messages

    def ack(self, event_id: str) -> None:
        """Remember ``event_id`` as processed; :meth:`take_ack` says when to send it.

        Raises:
            ValueError: not a livepanel event id.
        """
        parse_id(event_id)
        self._ack_pending = event_id

    @property
    def ack_waiting(self) -> bool:
        """Whether an ack waits for its turn (:data:`ACK_INTERVAL` after the last one)."""
        return self._ack_pending is not None

    def take_ack(self, now: float, force: bool = False) -> AckMessage | None:
        """The ``ack`` to send now, at most one every :data:`ACK_INTERVAL` seconds (any time
        with ``force``), or ``None``."""
        event_id = self._ack_pending
        if event_id is None or (not force and now - self._ack_sent_at < ACK_INTERVAL):
            return None
        self._ack_pending = None
        self._ack_sent_at = now
        return {"type": "ack", "payload": {"id": event_id}}

    def subscribe(
        self, types: tuple[str, ...], since: str | None, *, connected: bool
    ) -> SubscribeMessage | None:
        """Replace the filter (and resume after ``since``) for this connection and the
        next; the message to send when ``connected``.

        Raises:
            ValueError: ``since`` is not a livepanel event id.
        """
        if since is not None:
            parse_id(since)
            self.resume_from = since
        self.types = types
        if not connected:
            return None
        payload: SubscribePayload = {"types": list(types)}
        if since is not None:
            payload["since"] = since
            self.asked_since = since
        return {"type": "subscribe", "payload": payload}

    # ------------------------------------------------------------------ server frames

    def _on_frame(self, data: dict[str, Any], now: float) -> None:
        kind = data.get("type")
        payload = data.get("payload")
        if not isinstance(payload, dict):
            payload = {}
        if kind == "welcome" and "id" not in data:
            self._on_welcome(payload, now)
            return
        if not self.phase.opening:
            self.last_frame_at = now
        if kind == "state" and "id" not in data:
            if self.state is not None:  # resume after it: it holds everything up to there
                last = self.state.load(payload)
                if last is not None:
                    self.last_event_id = self.resume_from = self._conn_last_id = last
                with contextlib.suppress(ValueError):
                    self._ready.append(Event.from_dict(data))  # yielded: type "state", no id
            self._caught_up()  # the state holds everything up to now; live events follow
            return
        if kind in ("ping", "pong") and "id" not in data:
            if kind == "ping":
                self._caught_up()  # a heartbeat comes only after a silence: nothing is queued
            return
        if kind == "error" and "id" not in data:
            code, message = payload.get("code"), str(payload.get("message", ""))
            if code == "resume_unavailable":
                self.resume_from = self._conn_last_id or self.resume_from
                self._ready.append(ResumeUnavailable(self.asked_since, self.resume_from, message))
                self._caught_up()  # no replay comes: the server goes on live
            else:
                logger.warning("livepanel: %s reported %s: %s", self.url, code, message)
            return
        try:
            event = Event.from_dict(data)
        except ValueError as exc:
            logger.warning("livepanel: skipped a malformed event from %s (%s)", self.url, exc)
            return
        if event.id is not None:
            self.last_event_id = self.resume_from = self._conn_last_id = event.id
            if event.id == self._catch_up:
                self._caught_up()  # the replay reached the newest event at welcome
        if self.state is not None and self.state.loaded:
            self.state.apply(event)
        self._ready.append(event)

    def _on_welcome(self, payload: dict[str, Any], now: float) -> None:
        if not self.phase.opening:
            return  # one welcome per connection (a later one is not the server's), none after close
        self._welcomed_at = now
        self.last_frame_at = now
        interval = payload.get("heartbeatInterval")
        if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval > 0:
            self.heartbeat = float(interval)
        connection_id = payload.get("connectionId")
        self.connection_id = connection_id if isinstance(connection_id, str) else None
        last = payload.get("lastEventId")
        if isinstance(last, str) and last:
            self._conn_last_id = last
            if self.resume_from is None:
                self.resume_from = last
        if self.state is not None:
            self._catch_up = ""  # until the state frame
        elif self.asked_since is not None and self.asked_since != last:
            # the replay ends with the newest event at welcome (or, when filters hide that
            # one, at the first heartbeat, which comes only once nothing is queued)
            self._catch_up = last if isinstance(last, str) else ""
        self.phase = Phase.OPEN
