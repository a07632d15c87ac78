"""Answering a connection's ``subscribe``: its replay or its state, from the backend.

A ``subscribe`` with ``since`` or ``state`` holds the connection's live events
back (:meth:`Outbox.hold <livepanel.outbox.Outbox.hold>`), asks the backend
for the events after ``since`` or for the state, and hands the answer to the
outbox (:meth:`Outbox.release <livepanel.outbox.Outbox.release>`), which
queues it, then what was held, with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from livepanel.backends import Backend
from livepanel.connection import Connection
from livepanel.errors import BackendUnavailable
from livepanel.events import Event
from livepanel.outbox import DeliveryCounters
from livepanel.protocol import error_frame, parse_id
from livepanel.state import state_frame

__all__ = ["RESUME_UNAVAILABLE", "Resume"]

logger = logging.getLogger("livepanel")

T = TypeVar("T")

RESUME_UNAVAILABLE = error_frame(
    "resume_unavailable", "the events after 'since' are no longer retained; refetch your state"
)
"""The ``error`` frame a dashboard gets when its ``since`` is no longer retained."""


class CallBackend(Protocol):
    """Runs a call on the backend's loop: ``Broadcaster.call_backend``."""

    def __call__(self, call: Callable[[], Awaitable[T]]) -> Awaitable[T]: ...


class Resume:
    """Answers each ``subscribe`` of one broadcaster's connections.

    Args:
        backend: where the replay and the state come from.
        call_backend: runs a call on the backend's loop (``Broadcaster.call_backend``).
        counters: counts replays granted and unavailable.
        text_of: an event's JSON, shared with the live broadcast where it has it.

    Example::

        resume = Resume(backend, broadcaster.call_backend, counters, texts.text_of)
        resumed = await resume.resubscribe(conn, ("session.*",), since, False)
    """

    __slots__ = ("_call", "_counters", "_text_of", "backend")

    def __init__(
        self,
        backend: Backend,
        call_backend: CallBackend,
        counters: DeliveryCounters,
        text_of: Callable[[Event], str],
    ) -> None:
        self.backend = backend
        self._call = call_backend
        self._counters = counters
        self._text_of = text_of

    async def resubscribe(
        self, conn: Connection, types: tuple[str, ...], since: str | None, state: bool
    ) -> bool | None:
        """Replace ``conn``'s filter; with ``since``, replay with no gap and no duplicate;
        with ``state`` (and no resumable ``since``), queue a ``state`` frame first.

        Returns ``True`` when resumed, ``False`` when ``since`` is not retained,
        ``None`` without ``since``.
        """
        if since is None and not state:
            conn.set_types(types)  # checked already: by the protocol, or by subscribe()
            return None
        if since is not None:
            parse_id(since)
        conn.hold(types)
        if since is not None:
            events: list[Event] | None = None
            try:
                events = await self._call(lambda: self.backend.replay(since))
            except BackendUnavailable as exc:
                logger.warning(
                    "livepanel: cannot replay now (%s); answering resume_unavailable", exc
                )
            except asyncio.CancelledError:
                conn.release(since, None, unavailable=RESUME_UNAVAILABLE)
                raise
            if events is not None:
                self._counters.replays_granted += 1
            else:
                self._counters.replays_unavailable += 1
            if events is not None or not state:
                return conn.release(since, events, self._text_of, unavailable=RESUME_UNAVAILABLE)
        await self._send_state(conn, since)
        return False if since is not None else None

    async def _send_state(self, conn: Connection, since: str | None) -> None:
        """Queue the state at a stream position P, then the held events after P.

        The live events already queued are held; the state covers every event
        up to P, so those up to P, held or still on their way, are dropped (the
        replay hand-over with an empty replay ending at P), and every later one
        follows.
        """
        try:
            snapshot = await self._call(self.backend.state)
        except (BackendUnavailable, NotImplementedError) as exc:
            # the client goes on as if it had not asked: live events (or resume_unavailable)
            logger.warning("livepanel: cannot read the state now (%s)", exc)
            if since is not None:
                conn.release(since, None, unavailable=RESUME_UNAVAILABLE)
            else:
                conn.release(conn.last_event_id, [])  # a release: nothing is covered
            return
        except asyncio.CancelledError:
            conn.release(
                since or conn.last_event_id, None if since else [], unavailable=RESUME_UNAVAILABLE
            )
            raise
        conn.push_state(state_frame(snapshot, conn.filter, sees=conn.sees))
        conn.release(snapshot.last_event_id, [], self._text_of)
