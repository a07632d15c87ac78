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

The broadcaster counts connections too, for the whole process
(``Broadcaster.connection_count``, presence): those are its own counters.
"""

from __future__ import annotations

import asyncio
import enum

from livepanel.connection import CloseReason, Connection
from livepanel.handshake import Admission, Denial, check_limits
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

    def __init__(self, settings: EndpointSettings) -> None:
        self._settings = settings
        self._held = 0
        self._by_user: dict[str, int] = {}
        self._open: set[Connection] = set()  # accepted and not yet closed: what shut() closes
        self._state = EndpointState.SERVING
        self._empty: asyncio.Event | None = None  # set when the last slot is released

    @property
    def count(self) -> int:
        """Slots held now: connections accepted or being set up."""
        return self._held

    @property
    def state(self) -> EndpointState:
        """Serving, or shutting down."""
        return self._state

    def admit(self, admission: Admission, *, reserve: bool) -> Admission | Denial:
        """Check 5 of the handshake, the limits; with ``reserve``, a pass takes the slot.

        Example::

            slots.admit(admission, reserve=False)  # an HTTP probe: check, hold nothing
        """
        verdict = check_limits(
            admission,
            self._settings,
            held=self._held,
            held_by_user=self._by_user.get(admission.user, 0),
        )
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
            conn.close(CloseReason.GOING_AWAY)

    def closed(self, conn: Connection) -> None:
        """The connection closed: :meth:`shut` has nothing more to close there.

        Example::

            slots.closed(conn)
        """
        self._open.discard(conn)
        self._check_empty()

    def shut(self, reason: CloseReason) -> int:
        """Refuse new connections from now on and close the open ones with ``reason``;
        return how many were open.

        Example::

            closing = slots.shut(CloseReason.GOING_AWAY)
        """
        self._state = EndpointState.SHUTTING_DOWN
        open_now = list(self._open)
        for conn in open_now:
            conn.close(reason)
        return len(open_now)

    def reopen(self) -> None:
        """Take new connections again (a server starts the app).

        Example::

            slots.reopen()
        """
        self._state = EndpointState.SERVING

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
