"""livepanel: typed, real-time events from an ASGI backend to authenticated dashboards.

Example::

    from livepanel import LivePanelApp, BasicAuth, broadcast_event
    from livepanel.events import SessionCreated

    app.mount("/ws", LivePanelApp(auth=BasicAuth.from_env()))
    broadcast_event(SessionCreated(session_key="s1", agent_id="a1", kind="direct"))
"""

from livepanel.__about__ import __version__
from livepanel.asgi import LivePanelApp, LivePanelMiddleware
from livepanel.assets import static_path
from livepanel.auth import AnyOf, Authenticator, BasicAuth
from livepanel.backends import Backend, MemoryBackend
from livepanel.broadcaster import (
    Broadcaster,
    SlowConsumer,
    Subscription,
    broadcast_event,
    get_broadcaster,
    set_broadcaster,
)
from livepanel.errors import BackendUnavailable, ConfigurationError, LivePanelError
from livepanel.events import Event, event_type
from livepanel.health import health_app
from livepanel.receipts import Receipt
from livepanel.tickets import TicketAuth, Tickets

__all__ = [
    "AnyOf",
    "Authenticator",
    "Backend",
    "BackendUnavailable",
    "BasicAuth",
    "Broadcaster",
    "ConfigurationError",
    "Event",
    "LivePanelApp",
    "LivePanelError",
    "LivePanelMiddleware",
    "MemoryBackend",
    "Receipt",
    "SlowConsumer",
    "Subscription",
    "TicketAuth",
    "Tickets",
    "__version__",
    "broadcast_event",
    "event_type",
    "get_broadcaster",
    "health_app",
    "set_broadcaster",
    "static_path",
]
