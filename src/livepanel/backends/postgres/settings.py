"""What a PostgreSQL backend is configured with: checked once, then read by every part of it."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from livepanel.errors import ConfigurationError
from livepanel.events.redaction import redact_url
from livepanel.state import DEFAULT_STATE_LIMIT

__all__ = ["DEFAULT_SCHEMA", "DEFAULT_TABLE", "PostgresSettings", "TableNames", "split_url"]

DEFAULT_TABLE = "livepanel_events"
"""The stream's table unless a ``table`` is given (``postgresql://db/app?table=panel_events``)."""
DEFAULT_SCHEMA = "public"
"""The schema of every table livepanel keeps, unless a ``schema`` is given."""

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,39}")  # room for the longest suffix in 63 bytes
_OWN_QUERY = ("schema", "table", "poll_interval", "max_age", "reconnect_delay")


@dataclasses.dataclass(frozen=True)
class TableNames:
    """The names of what livepanel keeps in one schema for one stream.

    Example::

        >>> names = TableNames.of("public", "livepanel_events")
        >>> names.meta, names.channel
        ('livepanel_events_meta', 'livepanel_4d95df9b270abea7')
    """

    schema: str
    events: str
    """The stream: one row per event or control message."""
    meta: str
    """One row: the epoch, where it began, how far retention trimmed and the state reaches."""
    state: str
    """The events the state holds at ``meta.state_through`` (what retention folded)."""
    claims: str
    """Single-use claims (tickets) and the presence announcer's turn."""
    presence: str
    """Each worker's connection counts."""
    sequence: str
    """Positions, handed out in commit order under :attr:`stream_lock`."""
    function: str
    """The trigger function that gives an event written in a caller's transaction its position."""
    channel: str
    """The ``LISTEN``/``NOTIFY`` channel announcing new rows."""
    stream_lock: int
    """The advisory lock under which positions are handed out (held until commit)."""
    trim_lock: int
    """The advisory lock one retention round holds, so that workers take turns."""

    @classmethod
    def of(cls, schema: str, table: str) -> TableNames:
        """The names for ``table`` in ``schema``."""
        digest = hashlib.sha256(f"livepanel:{schema}.{table}".encode()).digest()
        return cls(
            schema=schema,
            events=table,
            meta=f"{table}_meta",
            state=f"{table}_state",
            claims=f"{table}_claims",
            presence=f"{table}_presence",
            sequence=f"{table}_position",
            function=f"{table}_sequence",
            channel=f"livepanel_{digest[:8].hex()}",
            stream_lock=int.from_bytes(digest[8:16], "big", signed=True),
            trim_lock=int.from_bytes(digest[16:24], "big", signed=True),
        )

    def lock_parts(self) -> tuple[int, int]:
        """The stream lock as ``pg_locks`` shows it: ``(classid, objid)``."""
        unsigned = self.stream_lock & 0xFFFFFFFFFFFFFFFF
        return unsigned >> 32, unsigned & 0xFFFFFFFF


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Take livepanel's own settings out of a ``postgresql://`` URL's query; libpq gets the rest.

    Example::

        >>> split_url("postgresql://db/app?table=panel&sslmode=require")
        ('postgresql://db/app?sslmode=require', {'table': 'panel'})
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_QUERY}
    rest = [(k, v) for k, v in query if k not in _OWN_QUERY]
    return urlunsplit(parts._replace(query=urlencode(rest))), own


@dataclasses.dataclass(frozen=True)
class PostgresSettings:
    """A PostgreSQL backend's settings, checked; see
    :class:`~livepanel.backends.postgres.PostgresBackend`.

    Example::

        >>> settings = PostgresSettings.check("postgresql://u:pw@db/app", table="panel")
        >>> settings.location, settings.names.events
        ('postgresql://u:***@db/app', 'panel')
    """

    conninfo: str
    location: str
    names: TableNames
    history: int
    max_age: float | None
    timeout: float
    poll_interval: float
    max_pending: int
    reconnect_delay: float
    reconnect_max_delay: float
    state_limit: int

    @classmethod
    def check(
        cls,
        conninfo: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        table: str = DEFAULT_TABLE,
        history: int = 1000,
        max_age: float | None = None,
        timeout: float = 5.0,
        poll_interval: float = 1.0,
        max_pending: int = 10000,
        reconnect_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        state_limit: int = DEFAULT_STATE_LIMIT,
    ) -> PostgresSettings:
        """Check every setting and name the first one that cannot work.

        Raises:
            ConfigurationError: an impossible setting, said plainly.
        """
        for name, value in (("schema", schema), ("table", table)):
            if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
                raise ConfigurationError(
                    f"PostgresBackend: {name}={value!r} must be a lowercase identifier of at "
                    "most 40 characters (letters, digits, underscores)"
                )
        if not isinstance(history, int) or isinstance(history, bool) or history < 1:
            raise ConfigurationError("PostgresBackend: history must be an integer >= 1")
        positive = {
            "timeout": timeout,
            "poll_interval": poll_interval,
            "reconnect_delay": reconnect_delay,
            "reconnect_max_delay": reconnect_max_delay,
        }
        if max_age is not None:
            positive["max_age"] = max_age
        for name, number in positive.items():
            if not isinstance(number, (int, float)) or isinstance(number, bool) or number <= 0:
                raise ConfigurationError(f"PostgresBackend: {name} must be a number > 0")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError("PostgresBackend: max_pending must be an integer >= 1")
        if not isinstance(state_limit, int) or isinstance(state_limit, bool) or state_limit < 1:
            raise ConfigurationError("PostgresBackend: state_limit must be an integer >= 1")
        return cls(
            conninfo=conninfo,
            location=redact_url(conninfo) if "://" in conninfo else "postgresql (conninfo)",
            names=TableNames.of(schema, table),
            history=history,
            max_age=None if max_age is None else float(max_age),
            timeout=float(timeout),
            poll_interval=float(poll_interval),
            max_pending=max_pending,
            reconnect_delay=float(reconnect_delay),
            reconnect_max_delay=float(reconnect_max_delay),
            state_limit=state_limit,
        )

    def backoff(self, failures: int) -> float:
        """The pause after ``failures`` failures in a row: doubling, capped, with jitter."""
        delay = min(
            self.reconnect_max_delay, self.reconnect_delay * 2.0 ** min(30, max(0, failures - 1))
        )
        jitter: float = random.uniform(0.5, 1.0)
        return delay * jitter
