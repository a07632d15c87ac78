"""Run a periodic publisher on one worker at a time: a lease on the backend, handed over
when its worker dies.

With ``uvicorn --workers 4`` every worker runs the application's startup, so a
poller started there polls four times and publishes every event four times.
:func:`run_once` runs it under a lease instead (the backend's
:class:`~livepanel.backends.base.Leases`): the worker holding the lease runs
the job every ``every`` seconds and renews the lease before each run; the
others try to take it every ``min(every, ttl / 5)`` seconds, and one of them
does once the holder stops renewing (SIGKILL, a hung loop, a lost network),
at most ``ttl`` seconds after its last renewal.

The backend's clock decides when a lease expires. The holder counts its own
lease from the moment it *asked* for it, on its monotonic clock, and stops
``ttl / 10`` before that: so a holder that was paused (SIGSTOP, a stalled VM)
and wakes after its lease ran out sees it lost, and :meth:`Lease.publish`
raises :class:`LeaseLost` instead of publishing beside the new holder. See
docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import NoReturn

from livepanel.backends.base import Leases, leases_of
from livepanel.broadcaster import Broadcaster
from livepanel.errors import BackendUnavailable, ConfigurationError, LivePanelError
from livepanel.events import Event

__all__ = ["Lease", "LeaseLost", "run_once"]

logger = logging.getLogger("livepanel")

_MARGIN = 0.1  # of the ttl: the holder stops this much before the backend would expire it

Job = Callable[["Lease"], Awaitable[object]]


class LeaseLost(LivePanelError):
    """The lease ran out (or another worker took it) before the job published.

    Example::

        try:
            lease.publish(GatewayStatus(status="running", version="1.2", uptime=5))
        except LeaseLost:
            return  # another worker runs the job now
    """


class Lease:
    """This worker's hold on a named lease: handed to the job that :func:`run_once` runs.

    Args:
        broadcaster: whose backend keeps the lease, and where the job publishes.
        name: the lease's name, the same in every worker (``"gateway-poller"``).
        ttl: seconds a lease lasts unless renewed.
        clock: a monotonic clock in seconds (tests pass their own).

    Example::

        async def poll(lease: Lease) -> None:
            lease.publish(GatewayStatus(**await gateway_status()))  # LeaseLost once not held
    """

    def __init__(
        self,
        broadcaster: Broadcaster,
        name: str,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broadcaster = broadcaster
        self.name = name
        self.ttl = ttl
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        """Who this worker is to the backend: host, process and a random part."""
        self.token: int | None = None
        """The fencing token while held (it grows each time the lease changes hands)."""
        self._clock = clock
        self._until = -math.inf

    @property
    def held(self) -> bool:
        """Whether this worker holds the lease now, by its own count (which ends first)."""
        return self.token is not None and self._clock() < self._until

    @property
    def remaining(self) -> float:
        """Seconds this worker still holds the lease, by its own count (0 when not held)."""
        return max(0.0, self._until - self._clock()) if self.token is not None else 0.0

    async def renew(self, leases: Leases) -> bool:
        """Take or renew the lease; whether this worker holds it now.

        A backend that cannot answer counts as not holding it.
        """
        asked = self._clock()  # before the request: the backend's expiry comes later
        try:
            token = await self.broadcaster.call_backend(
                lambda: leases.acquire_lease(self.name, self.holder, self.ttl)
            )
        except BackendUnavailable as exc:
            logger.warning("livepanel: cannot renew the lease %r: %s", self.name, exc)
            token = None
        was = self.token
        self.token = token
        self._until = asked + self.ttl * (1 - _MARGIN) if token is not None else -math.inf
        if token is not None and was != token:
            logger.info("livepanel: this worker now runs %r (lease token %d)", self.name, token)
        elif token is None and was is not None:
            logger.info("livepanel: this worker no longer runs %r", self.name)
        return token is not None

    async def release(self, leases: Leases) -> None:
        """Give the lease up, so another worker takes it without waiting out the ttl."""
        if self.token is None:
            return
        self.token = None
        self._until = -math.inf
        try:
            await self.broadcaster.call_backend(
                lambda: leases.release_lease(self.name, self.holder)
            )
        except BackendUnavailable:
            pass  # it expires on its own

    def publish(
        self, event: object, payload: object = None, *, audience: Iterable[str] | str | None = None
    ) -> Event:
        """:meth:`Broadcaster.publish`, while the lease is held.

        Raises:
            LeaseLost: the lease ran out or was taken: nothing was published.
            ValueError: as :meth:`Broadcaster.publish`.
        """
        self._check()
        return self.broadcaster.publish(event, payload, audience=audience)

    async def apublish(
        self, event: object, payload: object = None, *, audience: Iterable[str] | str | None = None
    ) -> Event:
        """:meth:`Broadcaster.apublish`, while the lease is held.

        Raises:
            LeaseLost: the lease ran out or was taken: nothing was published.
            BackendUnavailable: as :meth:`Broadcaster.apublish`.
        """
        self._check()
        return await self.broadcaster.apublish(event, payload, audience=audience)

    def _check(self) -> None:
        if not self.held:
            raise LeaseLost(
                f"livepanel: the lease {self.name!r} is not held by this worker (it ran out "
                "or another worker took it); nothing was published"
            )


async def run_once(
    broadcaster: Broadcaster,
    name: str,
    job: Job,
    *,
    every: float,
    ttl: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> NoReturn:
    """Run ``await job(lease)`` every ``every`` seconds on one worker at a time, until cancelled.

    Start it in every worker (from the application's startup); the one
    holding the lease ``name`` runs the job, the others wait to take over. A
    job that outlasts the lease is cancelled; a job that raises is logged
    (its exception's type only) and runs again next time. On cancellation the
    lease is released, so another worker takes over at once.

    Args:
        broadcaster: whose backend keeps the lease.
        name: the lease's name, the same in every worker.
        job: ``async def job(lease)``; publish with ``lease.publish(...)``, which refuses
            once the lease is lost.
        every: seconds from one run's start to the next.
        ttl: seconds a lease lasts without renewal: how long a dead holder keeps the
            job from running (``3 * every`` by default).
        clock: a monotonic clock in seconds.

    Raises:
        ConfigurationError: ``every`` is not positive, ``ttl`` is not longer than
            ``every``, or the backend declares no leases.

    Example::

        async def poll_gateway(lease: Lease) -> None:
            lease.publish(GatewayStatus(**await gateway.status()))

        @asynccontextmanager
        async def lifespan(app):
            poller = run_once(broadcaster, "gateway-poller", poll_gateway, every=5)
            task = asyncio.create_task(poller)
            yield
            task.cancel()
    """
    ttl = 3 * every if ttl is None else ttl
    if not every > 0 or not ttl > every:
        raise ConfigurationError(
            f"run_once({name!r}): every must be > 0 and ttl longer than every "
            f"(got every={every}, ttl={ttl}); a ttl of 3 * every is a good start"
        )
    leases = leases_of(broadcaster.backend)
    if leases is None:
        raise ConfigurationError(
            f"run_once({name!r}): {type(broadcaster.backend).__name__} keeps no leases; use "
            "the memory or Redis backend, or declare Capability.LEASES on yours"
        )
    if not leases.leases_shared:
        logger.info(
            "livepanel: the lease %r holds in this process only (%s): with several worker "
            "processes, each runs the job; use a Redis backend",
            name,
            type(broadcaster.backend).__name__,
        )
    lease = Lease(broadcaster, name, ttl, clock)
    retry = min(every, ttl / 5)
    try:
        while True:
            started = clock()
            if await lease.renew(leases):
                await _run(job, lease, every)
                pause = every - (clock() - started)
            else:
                pause = retry
            await asyncio.sleep(max(0.0, pause))
    finally:
        await asyncio.shield(lease.release(leases))


async def _run(job: Job, lease: Lease, every: float) -> None:
    """One run of ``job`` under ``lease``, cut off when the lease would run out."""
    try:
        await asyncio.wait_for(job(lease), timeout=lease.remaining)
    except asyncio.TimeoutError:
        logger.warning(
            "livepanel: %r ran past its lease (ttl %s s) and was cancelled; give it a longer ttl",
            lease.name,
            lease.ttl,
        )
    except LeaseLost:
        logger.warning("livepanel: %r lost its lease while running; not published", lease.name)
    except Exception as exc:  # the type only: its message may quote what the job read
        logger.error(
            "livepanel: %r raised %s; it runs again in %s s", lease.name, type(exc).__name__, every
        )
