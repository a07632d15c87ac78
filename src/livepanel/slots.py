"""Who is connected to one endpoint: its connection slots, per-user counts and open connections.

:class:`ConnectionSlots` is the one owner of what ``LivePanelApp`` counts for
its limits and closes on shutdown. A handshake takes a slot in the same step
as the limit check (:meth:`~ConnectionSlots.admit`, with no ``await`` between
them, so no number of racing handshakes gets past a limit) and gives it back
whichever way its connection ends (:meth:`~ConnectionSlots.release`, through
a :class:`Slot`, given back once: when its connection closes, even if a client
that stopped reading keeps the task a few seconds longer). An
accepted connection is :meth:`~ConnectionSlots.opened` and
:meth:`~ConnectionSlots.closed` by its transport; :meth:`~ConnectionSlots.shut`
closes every open one and turns the endpoint to
:attr:`EndpointState.SHUTTING_DOWN` until :meth:`~ConnectionSlots.reopen`.

With ``admission_rate`` set, :meth:`~ConnectionSlots.admit` also consults the
endpoint's :class:`~livepanel.admission.AdmissionLimiter`, after the limits
(a user at its limit takes no token) and in the same step as the slot. A
shutdown tells each connection when to come back (:meth:`~ConnectionSlots.farewell`),
the times spread over ``reconnect_window``.

The broadcaster counts connections too, for the whole process
(``Broadcaster.connection_count``, presence): those are its own counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections.abc import Callable

from livepanel.admission import HOLD, AdmissionLimiter
from livepanel.connection import CloseReason, Connection
from livepanel.handshake import Admission, Denial, check_limits, over_rate
from livepanel.settings import EndpointSettings

__all__ = ["ConnectionSlots", "EndpointState", "Slot"]


class EndpointState(enum.Enum):
    """Whether an endpoint takes new connections.

    ``SERVING`` → ``SHUTTING_DOWN`` on :meth:`ConnectionSlots.shut`
    (``LivePanelApp.shutdown()``); back to ``SERVING`` on
    :meth:`ConnectionSlots.reopen` (the next ``lifespan.startup``).

    Example::

        slots.state is EndpointState.SHUTTING_DOWN  # handshakes get 503 shutting_down
    """

    SERVING = "serving"
    SHUTTING_DOWN = "shutting_down"


class Slot:
    """One handshake's slot, reserved by :meth:`ConnectionSlots.admit`: given back once,
    by whichever comes first, its connection's close or the end of its handshake's task.

    Example::

        slot = Slot(slots, admission.user)
        conn.when_closed(slot.release)  # at the close decision...
        slot.release()  # ...or here, in a finally: only the first one counts
    """

    __slots__ = ("_slots", "held", "user")

    def __init__(self, slots: ConnectionSlots, user: str) -> None:
        self._slots = slots
        self.user = user
        self.held = True

    def release(self) -> None:
        """Give the slot back, unless it was already."""
        if self.held:
            self.held = False
            self._slots.release(self.user)


class ConnectionSlots:
    """One endpoint's connection slots, per-user counts and open connections.

    Args:
        settings: the endpoint's settings, for ``max_connections`` and
            ``max_connections_per_user``.

    Example::

        verdict = slots.admit(admission, reserve=True)
        if isinstance(verdict, Admission):
            try:
                ...  # serve the connection
            finally:
                slots.release(verdict.user)
    """

    def __init__(
        self, settings: EndpointSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._held = 0
        self._by_user: dict[str, int] = {}
        self._open: set[Connection] = set()  # accepted and not yet closed: what shut() closes
        self._state = EndpointState.SERVING
        self._empty: asyncio.Event | None = None  # set when the last slot is released
        self._farewells: dict[Connection, float] = {}  # closed by shut(): seconds to come back
        self._shut_reason = CloseReason.SERVICE_RESTART
        self._departures = 0  # connections whose task the server cancelled, and how many held
        self._departing_of = 0
        self.admission: AdmissionLimiter | None = None
        """The admission budget (``admission_rate``), or ``None`` without a rate."""
        if settings.admission_rate is not None:
            self.admission = AdmissionLimiter(
                settings.admission_rate, settings.admission_burst, hold=HOLD
            )

    @property
    def count(self) -> int:
        """Slots held now: connections accepted or being set up."""
        return self._held

    @property
    def state(self) -> EndpointState:
        """Serving, or shutting down."""
        return self._state

    def admit(
        self, admission: Admission, *, reserve: bool, address: str = ""
    ) -> Admission | Denial:
        """Check 5 of the handshake, the limits, then the admission rate (keyed by the user
        and the client ``address``); with ``reserve``, a pass takes the slot and a token.

        Example::

            slots.admit(admission, reserve=False)  # an HTTP probe: check, hold nothing
        """
        verdict = check_limits(
            admission,
            self._settings,
            held=self._held,
            held_by_user=self._by_user.get(admission.user, 0),
        )
        limiter = self.admission
        if (
            limiter is not None
            and isinstance(verdict, Admission)
            and self._state is EndpointState.SERVING  # shutting down: 503 follows, no token
        ):
            key = (admission.user, address)
            now = self._clock()
            wait = limiter.admit(key, now) if reserve else limiter.peek(key, now)
            if wait is not None:
                return over_rate(wait)
            if reserve and limiter.delay > 0:  # the bucket's next token: hold it till then
                verdict = dataclasses.replace(verdict, delay=limiter.delay)
        if reserve and isinstance(verdict, Admission):
            self._held += 1
            self._by_user[admission.user] = self._by_user.get(admission.user, 0) + 1
        return verdict

    def release(self, user: str) -> None:
        """Give back a slot :meth:`admit` reserved for ``user``.

        Example::

            slots.release(admission.user)
        """
        self._held -= 1
        left = self._by_user[user] - 1
        if left:
            self._by_user[user] = left
        else:
            del self._by_user[user]
        self._check_empty()

    def _check_empty(self) -> None:
        """Wake :meth:`wait_empty` once no slot is held and no connection is still open."""
        if not self._held and not self._open and self._empty is not None:
            self._empty.set()
            self._empty = None

    def opened(self, conn: Connection) -> None:
        """An accepted connection is open; one accepted as shutdown began closes at once.

        Example::

            slots.opened(conn)
            try:
                ...  # read the client's frames
            finally:
                slots.closed(conn)
        """
        self._open.add(conn)
        if self._state is EndpointState.SHUTTING_DOWN:
            self._farewells[conn] = self._settings.reconnect_window  # after those told before
            conn.close(self._shut_reason)

    def closed(self, conn: Connection) -> None:
        """The connection closed: :meth:`shut` has nothing more to close there.

        Example::

            slots.closed(conn)
        """
        self._open.discard(conn)
        self._farewells.pop(conn, None)
        self._check_empty()

    def shut(self, reason: CloseReason) -> int:
        """Refuse new connections from now on and close the open ones with ``reason``;
        return how many were open. Connection ``i`` of ``n`` is told to come back after
        ``(i + 0.5) / n * reconnect_window`` seconds (:meth:`farewell`), so that they
        do not all return at once.

        Example::

            closing = slots.shut(CloseReason.SERVICE_RESTART)
        """
        self._state = EndpointState.SHUTTING_DOWN
        self._shut_reason = reason
        open_now = list(self._open)
        window = self._settings.reconnect_window
        for i, conn in enumerate(open_now):
            self._farewells[conn] = (i + 0.5) / len(open_now) * window
            conn.close(reason)
        return len(open_now)

    def departing(self) -> float:
        """A connection whose task the server cancels (it stops without telling the app):
        seconds it is told to wait, the next of a spread over ``reconnect_window`` across
        the connections held when the first went.

        Example::

            await transport.abandon(retry_reason(slots.departing()))
        """
        if not self._departures or self._departures >= self._departing_of:
            self._departures, self._departing_of = 0, max(1, self._held)
        self._departures += 1
        return (self._departures - 0.5) / self._departing_of * self._settings.reconnect_window

    def farewell(self, conn: Connection) -> float | None:
        """Seconds :meth:`shut` told ``conn`` to wait before it comes back, or ``None`` when
        it did not close it.

        Example::

            wait = slots.farewell(conn)  # said in the close reason: retry_after=<seconds>
        """
        return self._farewells.get(conn)

    def reopen(self) -> None:
        """Take new connections again (a server starts the app).

        Example::

            slots.reopen()
        """
        self._state = EndpointState.SERVING
        self._departures = self._departing_of = 0

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until every slot is released and every connection has said its goodbye, at
        most ``timeout`` seconds; whether they have.

        Example::

            if not await slots.wait_empty(5.0):
                ...  # some connections are still open
        """
        if not self._held and not self._open:
            return True
        if self._empty is None:  # shared by concurrent waits (a signal, then lifespan)
            self._empty = asyncio.Event()
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True
