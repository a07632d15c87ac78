"""The built-in event types of an agent admin panel (ClawPanel's): opt-in.

``session.created``, ``session.killed``, ``agent.status``, ``cron.executed``
and ``gateway.status`` (SPEC sections 3 and 7). Importing this module
registers all five, with their state collections ``sessions``, ``agents``,
``cronRuns`` and ``gateway``; ``from livepanel.events import SessionCreated``
(or any of the five) imports it. Importing ``livepanel`` or
``livepanel.events`` registers none of them, so an application that never
uses them sees no such collections and may declare a ``session.created`` of
its own (and then cannot import these).

Example::

    from livepanel.events import SessionCreated

    broadcast_event(SessionCreated(session_key="s1", agent_id="a1", kind="direct"))
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, ClassVar, Literal

from livepanel.events.registry import event_type, registered_types
from livepanel.events.validation import NonNegative

__all__ = [
    "BUILTIN_TYPES",
    "AgentStatus",
    "CronExecuted",
    "GatewayStatus",
    "SessionCreated",
    "SessionKilled",
]

BUILTIN_TYPES = (
    "session.created",
    "session.killed",
    "agent.status",
    "cron.executed",
    "gateway.status",
)
"""The names this module registers, all five or none."""


def _refuse_taken_names() -> None:
    """All five or none: a name the application registered first stops the import here."""
    taken = {
        name: cls
        for name in BUILTIN_TYPES
        if (cls := registered_types().get(name)) is not None and cls.__module__ != __name__
    }
    if taken:
        name, cls = next(iter(taken.items()))
        raise ValueError(
            f"livepanel.events.builtin: event type {name!r} is already registered to "
            f"{cls.__module__}.{cls.__qualname__}; the built-in types "
            f"({', '.join(BUILTIN_TYPES)}) are registered all together or not at all, so "
            f"none of them can be used beside it: keep your own {name!r} and do not import "
            "the built-in types, or rename yours"
        )


_refuse_taken_names()

NonNegativeInt = Annotated[int, NonNegative()]
NonNegativeFloat = Annotated[float, NonNegative()]


@event_type("session.created", collection="sessions", key="session_key")
@dataclasses.dataclass(frozen=True)
class SessionCreated:
    """A session was spawned: event type ``session.created``.

    Example::

        broadcast_event(SessionCreated(session_key="s1", agent_id="a1", kind="direct"))
    """

    type: ClassVar[str]
    session_key: str
    agent_id: str
    kind: Literal["direct", "cron", "subagent"]
    label: str | None = None


@event_type("session.killed", collection="sessions", key="session_key", removes=True)
@dataclasses.dataclass(frozen=True)
class SessionKilled:
    """A session ended: event type ``session.killed``.

    Example::

        broadcast_event(SessionKilled(session_key="s1", agent_id="a1"))
    """

    type: ClassVar[str]
    session_key: str
    agent_id: str


@event_type("agent.status", collection="agents", key="agent_id")
@dataclasses.dataclass(frozen=True)
class AgentStatus:
    """An agent's state: event type ``agent.status``.

    ``last_activity`` takes a ``datetime`` or an ISO 8601 string.

    Example::

        >>> status = AgentStatus("a1", "running", 2, last_activity="2026-02-21T10:00:00Z")
        >>> status.last_activity
        datetime.datetime(2026, 2, 21, 10, 0, tzinfo=datetime.timezone.utc)
    """

    type: ClassVar[str]
    agent_id: str
    status: Literal["running", "idle", "error"]
    active_session_count: NonNegativeInt
    last_activity: datetime | None = None


@event_type("cron.executed", collection="cronRuns", keep=20)
@dataclasses.dataclass(frozen=True)
class CronExecuted:
    """A cron job ran: event type ``cron.executed``.

    ``stdout`` and ``stderr`` are cut to
    :data:`~livepanel.events.redaction.STREAM_OUTPUT_LIMIT` bytes when published.

    Example::

        broadcast_event(CronExecuted("backup", "tar czf db.tgz", exit_code=0, duration_ms=812))
    """

    type: ClassVar[str]
    job_id: str
    command: str
    exit_code: int
    duration_ms: NonNegativeInt
    stdout: str | None = None
    stderr: str | None = None


@event_type("gateway.status", collection="gateway", keep=1)
@dataclasses.dataclass(frozen=True)
class GatewayStatus:
    """The agent gateway's state: event type ``gateway.status``.

    ``uptime`` is seconds as a float; an int is accepted.

    Example::

        >>> GatewayStatus("running", "1.4.2", uptime=3600)
        GatewayStatus(status='running', version='1.4.2', uptime=3600.0)
    """

    type: ClassVar[str]
    status: Literal["running", "stopped", "error"]
    version: str
    uptime: NonNegativeFloat
