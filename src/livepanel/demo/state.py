"""What the dashboard shows, as a fold of the event stream.

The page builds its tables by applying events to a snapshot; this module
applies the same events in the same way on the server, so ``/api/snapshot``
is exactly the state the events describe, with the id of the last one applied.
``static/dashboard.js`` holds the same reducer in JavaScript: change both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from livepanel.broadcaster import Broadcaster, SlowConsumer
from livepanel.events import Event

__all__ = ["MAX_CRON_RUNS", "DashboardState", "Projection"]

logger = logging.getLogger("livepanel")

MAX_CRON_RUNS = 20
"""The cron runs table keeps the newest runs only."""


class DashboardState:
    """Sessions, agents, recent cron runs and the gateway, keyed as the page keys them.

    Example::

        >>> from livepanel import Event
        >>> state = DashboardState()
        >>> state.apply(Event("session.killed", {"sessionKey": "s1", "agentId": "a1"}, id="e:1"))
        >>> state.snapshot()["lastEventId"]
        'e:1'
    """

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.sessions: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, dict[str, Any]] = {}
        self.cron_runs: list[dict[str, Any]] = []
        self.gateway: dict[str, Any] | None = None

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> DashboardState:
        """The state a :meth:`snapshot` describes (what the page starts from)."""
        state = cls(snapshot.get("lastEventId"))
        state.sessions = dict(snapshot.get("sessions") or {})
        state.agents = dict(snapshot.get("agents") or {})
        state.cron_runs = list(snapshot.get("cronRuns") or [])
        state.gateway = snapshot.get("gateway")
        return state

    def apply(self, event: Event) -> None:
        """Fold one event in; unknown types only move ``last_event_id``."""
        wire = event.to_dict()
        payload = dict(wire["payload"])
        at = wire["timestamp"]
        if event.type == "session.created":
            self.sessions[payload["sessionKey"]] = {**payload, "startedAt": at}
        elif event.type == "session.killed":
            self.sessions.pop(payload["sessionKey"], None)
        elif event.type == "agent.status":
            self.agents[payload["agentId"]] = {**payload, "updatedAt": at}
        elif event.type == "cron.executed":
            self.cron_runs.insert(0, {**payload, "id": event.id, "at": at})
            del self.cron_runs[MAX_CRON_RUNS:]
        elif event.type == "gateway.status":
            self.gateway = {**payload, "at": at}
        if event.id is not None:
            self.last_event_id = event.id

    def snapshot(self) -> dict[str, Any]:
        """The JSON the page starts from (and refetches after ``resume_unavailable``)."""
        return {
            "lastEventId": self.last_event_id,
            "sessions": self.sessions,
            "agents": self.agents,
            "cronRuns": self.cron_runs,
            "gateway": self.gateway,
        }


class Projection:
    """Keeps a :class:`DashboardState` up to date from a broadcaster's live events.

    Example::

        projection = Projection(broadcaster)
        task = asyncio.create_task(projection.run())
        await projection.ready.wait()
        snapshot = projection.state.snapshot()  # what GET /api/snapshot answers
    """

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster
        self.state = DashboardState()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Subscribe, mark ready, and apply every event until cancelled."""
        since: str | None = None
        while True:
            try:
                async with self.broadcaster.subscribe(since=since) as events:
                    if since is None:
                        self.state = DashboardState(events.last_event_id)
                    elif not events.resumed:
                        logger.warning(
                            "livepanel demo: the snapshot missed events; restart the demo"
                        )
                    self.ready.set()
                    async for event in events:
                        self.state.apply(event)
                return
            except SlowConsumer:  # fell 'queue_size' events behind: resume where it stopped
                since = self.state.last_event_id
