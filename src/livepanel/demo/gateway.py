"""A simulated agent gateway: agents that work, sessions that come and go, cron jobs that run.

It stands in for ClawPanel's backend. It holds the truth (which sessions
exist) and publishes an event for every change, the way a real backend calls
``broadcast_event`` after each write.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from livepanel.broadcaster import Broadcaster
from livepanel.events.builtin import (
    AgentStatus,
    CronExecuted,
    GatewayStatus,
    SessionCreated,
    SessionKilled,
)

__all__ = ["AGENTS", "GATEWAY_VERSION", "KINDS", "SimulatedGateway"]

AGENTS = ("atlas", "hermes", "orion", "vega")
"""The simulated agents: ``SimulatedGateway.spawn("atlas")`` starts a session on one."""
KINDS = ("direct", "cron", "subagent")
"""The session kinds of ``session.created``."""
GATEWAY_VERSION = "2.4.1"
"""The version the simulated gateway reports in ``gateway.status``."""

Kind = Literal["direct", "cron", "subagent"]

_CRON_JOBS = (
    ("backup-db", "pg_dump clawpanel | gzip > /backups/clawpanel.sql.gz", "dumped 48 tables"),
    ("rotate-logs", "logrotate /etc/logrotate.d/agents", "rotated 6 files"),
    ("sync-memory", "claw memory sync --all", "synced 4 agents"),
    ("prune-sessions", "claw sessions prune --older-than 24h", "pruned 3 sessions"),
    ("refresh-models", "claw models refresh", "3 models up to date"),
)
_SUBAGENT_TASKS = (
    "summarize open pull requests",
    "triage new issues",
    "draft release notes",
    "check flaky tests",
    "answer support inbox",
    "review dependency updates",
)
_GATEWAY_EVERY = 10.0  # seconds between gateway.status heartbeats


@dataclass
class _Session:
    agent_id: str
    kind: Kind
    by_gateway: bool


class SimulatedGateway:
    """Publishes a steady, plausible stream of ClawPanel events on ``broadcaster``.

    Args:
        broadcaster: where the events go.
        interval: mean seconds between simulated events; ``0`` keeps the
            gateway quiet but for the sessions spawned and killed through it.
        rng: the randomness, for reproducible tests.

    Example::

        gateway = SimulatedGateway(Broadcaster(), rng=random.Random(7))
        key = gateway.spawn("atlas", "subagent", label="triage new issues")
        gateway.step()  # one random happening: a cron run, a new session, an error...
        gateway.kill(key)
    """

    def __init__(
        self, broadcaster: Broadcaster, *, interval: float = 1.5, rng: random.Random | None = None
    ) -> None:
        self.broadcaster = broadcaster
        self.interval = interval
        self.rng = rng or random.Random()
        self.sessions: dict[str, _Session] = {}
        self.errors: set[str] = set()
        self.started = time.monotonic()

    # ------------------------------------------------------------------ changes

    def spawn(self, agent_id: str, kind: Kind = "direct", label: str | None = None) -> str:
        """Start a session on ``agent_id``; returns its key.

        Raises:
            ValueError: an unknown agent or kind.
        """
        if agent_id not in AGENTS:
            raise ValueError(f"unknown agent {agent_id!r}; expected one of {', '.join(AGENTS)}")
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        return self._spawn(agent_id, kind, label, by_gateway=False)

    def kill(self, session_key: str) -> bool:
        """End a session; ``False`` when there is no such session."""
        session = self.sessions.pop(session_key, None)
        if session is None:
            return False
        self.broadcaster.publish(SessionKilled(session_key=session_key, agent_id=session.agent_id))
        self._agent_status(session.agent_id)
        return True

    def announce(self) -> None:
        """Publish the whole picture: the gateway and every agent."""
        self._gateway_status()
        for agent_id in AGENTS:
            self._agent_status(agent_id)

    def step(self) -> None:
        """One simulated happening, picked at random."""
        rng = self.rng
        own = [key for key, s in self.sessions.items() if s.by_gateway]
        roll = rng.random()
        if roll < 0.35:
            self._cron_run()
        elif roll < 0.6 and len(own) < 6:
            kind: Kind = rng.choice(("subagent", "subagent", "cron"))
            label = rng.choice(_SUBAGENT_TASKS) if kind == "subagent" else None
            self._spawn(rng.choice(AGENTS), kind, label, by_gateway=True)
        elif roll < 0.8 and own:
            self.kill(rng.choice(own))
        elif rng.random() < 0.15:
            agent_id = rng.choice(AGENTS)
            self.errors ^= {agent_id}  # an agent fails now and then, and recovers
            self._agent_status(agent_id)
        else:
            busy = sorted({s.agent_id for s in self.sessions.values()} | self.errors)
            if busy:
                agent_id = rng.choice(busy)
                self.errors.discard(agent_id)
                self._agent_status(agent_id)  # a working agent reports its activity
            else:
                self._cron_run()

    async def run(self) -> None:
        """Announce, then keep publishing until cancelled."""
        self.announce()
        if self.interval <= 0:
            return
        for _ in range(2):  # a gateway is never found idle: some work is under way
            agent_id = self.rng.choice(AGENTS)
            self._spawn(agent_id, "subagent", self.rng.choice(_SUBAGENT_TASKS), by_gateway=True)
            self._cron_run()
        next_gateway = time.monotonic() + _GATEWAY_EVERY
        while True:
            await asyncio.sleep(self.interval * self.rng.uniform(0.4, 1.6))
            self.step()
            if time.monotonic() >= next_gateway:
                self._gateway_status()
                next_gateway += _GATEWAY_EVERY

    # ------------------------------------------------------------------ events

    def _spawn(self, agent_id: str, kind: Kind, label: str | None, *, by_gateway: bool) -> str:
        key = f"{agent_id}:{kind}:{secrets.token_hex(3)}"
        self.sessions[key] = _Session(agent_id, kind, by_gateway)
        self.broadcaster.publish(
            SessionCreated(session_key=key, agent_id=agent_id, kind=kind, label=label or None)
        )
        self._agent_status(agent_id)
        return key

    def _agent_status(self, agent_id: str) -> None:
        active = sum(1 for s in self.sessions.values() if s.agent_id == agent_id)
        status: Literal["running", "idle", "error"] = (
            "error" if agent_id in self.errors else "running" if active else "idle"
        )
        self.broadcaster.publish(
            AgentStatus(
                agent_id=agent_id,
                status=status,
                active_session_count=active,
                last_activity=datetime.now(timezone.utc),
            )
        )

    def _cron_run(self) -> None:
        job_id, command, output = self.rng.choice(_CRON_JOBS)
        failed = self.rng.random() < 0.12
        self.broadcaster.publish(
            CronExecuted(
                job_id=job_id,
                command=command,
                exit_code=self.rng.choice((1, 2, 124)) if failed else 0,
                duration_ms=int(self.rng.lognormvariate(6.5, 0.9)),
                stdout=None if failed else output,
                stderr="error: upstream timed out" if failed else None,
            )
        )

    def _gateway_status(self) -> None:
        self.broadcaster.publish(
            GatewayStatus(
                status="running",
                version=GATEWAY_VERSION,
                uptime=round(time.monotonic() - self.started, 1),
            )
        )
