"""The endpoint's settings: ``LivePanelApp``'s arguments, checked once and frozen.

One :class:`EndpointSettings` serves every connection of an app: the handshake
checks (:mod:`livepanel.handshake`), the connection slots
(:mod:`livepanel.slots`) and both transports (:mod:`livepanel.transports`) read
it, and nothing writes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.typing import WWWScope

from livepanel.auth import Authenticator
from livepanel.errors import ConfigurationError
from livepanel.origin import OriginPolicy

__all__ = ["Audiences", "Authorize", "EndpointSettings"]

Authorize = Callable[[Any, WWWScope], "bool | Awaitable[bool]"]
"""``authorize(principal, scope)``, sync or async: false refuses the handshake with 403.

Example::

    def admins_only(principal, scope):
        return getattr(principal, "is_admin", False)

    LivePanelApp(auth=BasicAuth(verify), authorize=admins_only)
"""

Audiences = Callable[[Any, WWWScope], Any]
"""``audiences(principal, scope)``, sync or async: a connection's audience strings, or ``None``.

Example::

    def teams(principal, scope):
        return {f"team:{t}" for t in principal.teams} | {f"user:{principal.username}"}

    LivePanelApp(auth=BasicAuth(verify), audiences=teams)
"""


@dataclass(frozen=True)
class EndpointSettings:
    """What one endpoint does with each handshake and connection (see ``LivePanelApp``).

    Raises:
        ConfigurationError: an ``auth`` that is not callable, a heartbeat, a
            message size or an admission rate that is not positive, a limit or
            a burst below 1, or a negative ``reconnect_window``.

    Example::

        settings = EndpointSettings(auth=None, origin_policy=OriginPolicy(None))
        settings.heartbeat_interval  # 25.0
    """

    auth: Authenticator | None
    origin_policy: OriginPolicy
    authorize: Authorize | None = None
    audiences: Audiences | None = None
    require_tls: bool = False
    heartbeat_interval: float = 25.0
    max_message_size: int = 65536
    max_connections: int | None = None
    max_connections_per_user: int | None = None
    client_rate: float | None = 20.0
    client_burst: int = 40
    admission_rate: float | None = None
    admission_burst: int | None = None
    reconnect_window: float = 5.0

    def __post_init__(self) -> None:
        if self.auth is not None and not callable(self.auth):
            raise ConfigurationError(
                "LivePanelApp: auth must be an Authenticator such as BasicAuth.from_env(), "
                "or None to allow anonymous access"
            )
        if self.heartbeat_interval <= 0:
            raise ConfigurationError("LivePanelApp: heartbeat_interval must be > 0 seconds")
        if self.max_message_size < 1:
            raise ConfigurationError("LivePanelApp: max_message_size must be >= 1 byte")
        for name, limit in (
            ("max_connections", self.max_connections),
            ("max_connections_per_user", self.max_connections_per_user),
        ):
            if limit is not None and limit < 1:
                raise ConfigurationError(f"LivePanelApp: {name} must be >= 1 or None")
        if self.admission_rate is not None and not self.admission_rate > 0:
            raise ConfigurationError(
                "LivePanelApp: admission_rate must be > 0 handshakes per second, "
                "or None to admit without a rate"
            )
        if self.admission_burst is not None and self.admission_burst < 1:
            raise ConfigurationError("LivePanelApp: admission_burst must be >= 1 or None")
        if not self.reconnect_window >= 0:
            raise ConfigurationError("LivePanelApp: reconnect_window must be >= 0 seconds")
