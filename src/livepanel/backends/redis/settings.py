"""What a Redis backend is configured with: checked once, then read by every part of it."""

from __future__ import annotations

import dataclasses
import random

from livepanel.backends.redis.connect import Topology, companion_key
from livepanel.errors import ConfigurationError
from livepanel.state import DEFAULT_STATE_LIMIT

__all__ = ["DEFAULT_STREAM", "MIN_STREAM_LENGTH", "RedisSettings", "StreamKeys"]

DEFAULT_STREAM = "livepanel:events"
"""The stream's key unless a ``stream`` is given (``redis://host/0?stream=clawpanel:events``)."""
MIN_STREAM_LENGTH = 100
"""The stream keeps at least this many entries whatever ``history`` is: readers need slack."""


@dataclasses.dataclass(frozen=True)
class StreamKeys:
    """The stream's key and the keys kept beside it (in its Cluster hash slot).

    Example::

        >>> StreamKeys.beside("livepanel:events", cluster=False).epoch
        'livepanel:events:epoch'
    """

    stream: str
    epoch: str
    """The epoch record: ``epoch``, ``first`` and ``base``."""
    state: str
    """The state hash, updated by the script that appends each entry."""
    state_order: str
    """The state's eviction order (a sorted set)."""

    @classmethod
    def beside(cls, stream: str, *, cluster: bool) -> StreamKeys:
        """The keys for ``stream``.

        Raises:
            ConfigurationError: in a Cluster, the keys cannot share the stream's slot.
        """
        return cls(
            stream,
            companion_key(stream, "epoch", cluster=cluster),
            companion_key(stream, "state", cluster=cluster),
            companion_key(stream, "state:order", cluster=cluster),
        )

    def script_keys(self) -> list[str]:
        """``KEYS`` of the publish and stream-state scripts, in their order."""
        return [self.stream, self.epoch, self.state, self.state_order]


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    """A Redis backend's settings, checked; see :class:`~livepanel.backends.redis.RedisBackend`.

    Example::

        >>> settings = RedisSettings.check(topology="standalone", location="redis://r/0")
        >>> settings.maxlen, settings.wait_replicas
        (1000, 0)
    """

    topology: Topology
    location: str
    keys: StreamKeys
    history: int
    timeout: float
    max_pending: int
    reconnect_delay: float
    reconnect_max_delay: float
    wait_replicas: int
    wait_timeout: float
    state_limit: int

    @classmethod
    def check(
        cls,
        *,
        topology: Topology,
        location: str,
        stream: str = DEFAULT_STREAM,
        history: int = 1000,
        timeout: float = 5.0,
        max_pending: int = 10000,
        reconnect_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        wait_replicas: int | None = None,
        wait_timeout: float = 1.0,
        state_limit: int = DEFAULT_STATE_LIMIT,
    ) -> RedisSettings:
        """Settings from the backend's arguments (after :func:`check_values`), or the first
        mistake among them.

        Raises:
            ConfigurationError: a malformed or impossible setting, named.
        """
        check_values(
            stream=stream,
            history=history,
            timeout=timeout,
            max_pending=max_pending,
            reconnect_delay=reconnect_delay,
            reconnect_max_delay=reconnect_max_delay,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
            state_limit=state_limit,
        )
        keys = StreamKeys.beside(stream, cluster=topology == "cluster")
        if wait_replicas is None:
            wait_replicas = 1 if topology == "sentinel" else 0
        if wait_replicas and topology == "cluster":
            raise ConfigurationError(
                "RedisBackend: wait_replicas is not supported on Redis Cluster; leave it at 0"
            )
        return cls(
            topology,
            location,
            keys,
            history,
            timeout,
            max_pending,
            reconnect_delay,
            reconnect_max_delay,
            wait_replicas,
            wait_timeout,
            state_limit,
        )

    @property
    def maxlen(self) -> int:
        """``MAXLEN ~`` of each ``XADD``: ``history``, and never under ``MIN_STREAM_LENGTH``."""
        return max(self.history, MIN_STREAM_LENGTH)

    def block_ms(self) -> int:
        """How long one XREAD waits: well inside the socket timeout, so a stall is noticed."""
        longest = 1000 if self.topology == "sentinel" else 2000  # the reader checks the primary
        return max(50, min(longest, int(self.timeout * 400)))

    def backoff(self, failures: int) -> float:
        """The pause after ``failures`` failures in a row: doubling, capped, with jitter."""
        delay = min(self.reconnect_max_delay, self.reconnect_delay * 2.0 ** min(failures - 1, 30))
        return delay * random.uniform(0.5, 1.0)


def check_values(
    *,
    stream: object,
    history: object,
    timeout: float,
    max_pending: int,
    reconnect_delay: float,
    reconnect_max_delay: float,
    wait_replicas: object,
    wait_timeout: float,
    state_limit: object,
) -> None:
    """Refuse a setting that cannot work, before anything is connected or parsed.

    Raises:
        ConfigurationError: the first bad setting, named.
    """
    if not isinstance(stream, str) or not stream:
        raise ConfigurationError("RedisBackend: stream must be a non-empty key name")
    if not isinstance(history, int) or history < 0:
        raise ConfigurationError("RedisBackend: history must be an integer >= 0")
    if timeout <= 0 or reconnect_delay <= 0 or reconnect_max_delay < reconnect_delay:
        raise ConfigurationError(
            "RedisBackend: timeout and reconnect_delay must be > 0, and "
            "reconnect_max_delay >= reconnect_delay"
        )
    if max_pending < 1:
        raise ConfigurationError("RedisBackend: max_pending must be >= 1")
    if wait_replicas is not None and (not isinstance(wait_replicas, int) or wait_replicas < 0):
        raise ConfigurationError("RedisBackend: wait_replicas must be an integer >= 0")
    if wait_timeout <= 0:
        raise ConfigurationError("RedisBackend: wait_timeout must be > 0")
    if not isinstance(state_limit, int) or isinstance(state_limit, bool) or state_limit < 1:
        raise ConfigurationError("RedisBackend: state_limit must be an integer >= 1")
