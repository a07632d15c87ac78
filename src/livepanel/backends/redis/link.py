"""The Redis backend's one client: made, checked, renewed and closed in one place.

The writer, the reader, replays and the capabilities all talk to Redis
through the :class:`Link`: a client belongs to the event loop it was first
used on, so when that loop closes the link makes a new one (when the client
is ours; a client the application gave is its own business).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from livepanel.backends.redis.connect import (
    RedisClient,
    RedisTarget,
    Topology,
    check_deployment,
    make_client,
)
from livepanel.backends.redis.scripts import Scripts
from livepanel.errors import BackendUnavailable

__all__ = ["Link"]


class Link:
    """Owns the client (when it made it), its scripts, and the one-time deployment check.

    Args:
        target: where to connect, or ``None`` for a client the application made.
        client: that client, when ``target`` is ``None``.
        timeout: seconds for connecting and for each command.
        location: the target's description for messages (passwords hidden).
        topology: ``"standalone"``, ``"sentinel"`` or ``"cluster"``.

    Example::

        link = Link(parse_target("redis://cache:6379/0"), None, timeout=5.0, location=...)
        await link.check_once()
        await link.scripts().stream_state(keys, last_id="0-0")
    """

    def __init__(
        self,
        target: RedisTarget | None,
        client: RedisClient | None,
        *,
        timeout: float,
        location: str,
        topology: Topology,
    ) -> None:
        self.target = target
        self.owns_client = target is not None
        self.timeout = timeout
        self.location = location
        self.topology = topology
        self.client: RedisClient | None = client if client is not None else self._make()
        self._checked = False  # check_deployment() passed once: a deployment does not change
        self._scripts: Scripts | None = None

    def require(self) -> RedisClient:
        """The client.

        Raises:
            BackendUnavailable: the backend is stopped.
        """
        client = self.client
        if client is None:
            raise BackendUnavailable("livepanel: the Redis backend is stopped")
        return client

    def scripts(self) -> Scripts:
        """The scripts, registered on the current client.

        Raises:
            BackendUnavailable: the backend is stopped.
        """
        client = self.require()
        scripts = self._scripts
        if scripts is None or scripts.client is not client:
            scripts = self._scripts = Scripts(client)
        return scripts

    def connect(self) -> RedisClient:
        """The client, made anew after :meth:`loop_closed` or :meth:`close`."""
        if self.client is None:
            self.client = self._make()
        return self.client

    def loop_closed(self) -> None:
        """The loop the client ran on has closed: its connections went with it."""
        if self.owns_client:
            self.client = None
            self._scripts = None

    async def check_once(self) -> None:
        """Refuse a deployment livepanel cannot work with, on the first start only.

        Raises:
            ConfigurationError: see :func:`~livepanel.backends.redis.connect.check_deployment`.
        """
        if self._checked:
            return
        target = self.target or RedisTarget(self.topology, self.location)
        await check_deployment(self.require(), target)
        self._checked = True

    async def forget_idle_connections(self) -> None:
        """Open new connections from now on: the idle ones lead to a server that is gone or
        no longer the primary (Sentinel asks again where the primary is)."""
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:
            return
        try:
            await pool.disconnect(inuse_connections=False)
        except Exception:  # closing sockets that are already gone
            pass

    async def close(self) -> None:
        """Close the client when it is ours; the application closes its own."""
        if not self.owns_client or self.client is None:
            return
        client, self.client = self.client, None
        self._scripts = None
        try:
            await client.aclose()
        except Exception:  # closing a connection that is already gone
            pass

    def _make(self) -> RedisClient:
        assert self.target is not None
        defaults: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            # livepanel retries itself; a blind retry could XADD twice
            "retry": Retry(NoBackoff(), 0),
            "client_name": "livepanel",
        }
        return make_client(self.target, defaults)
