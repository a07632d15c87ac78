"""The demo: a small ClawPanel-like dashboard fed only by livepanel events.

Run it with ``livepanel demo`` or ``python -m livepanel.demo`` (``pip install
'livepanel[demo]'`` brings the ASGI server). It serves, behind Basic Auth, live
tables of sessions, agents, cron runs and the gateway, buttons that spawn and
kill sessions through REST endpoints, and a simulated agent gateway that keeps
publishing events. Open it in two tabs: each updates the other.
"""

from __future__ import annotations

import os
import secrets
import sys
from typing import TextIO

from livepanel.broadcaster import Broadcaster
from livepanel.demo.app import DemoApp

__all__ = ["DemoApp", "credentials", "serve"]


def credentials(environ: dict[str, str] | None = None) -> tuple[str, str, bool]:
    """``(username, password, generated)`` from DASHBOARD_USERNAME / DASHBOARD_PASSWORD.

    A missing user name is ``admin``; a missing password is generated, and
    ``generated`` says so.

    Example::

        >>> credentials({"DASHBOARD_USERNAME": "ops", "DASHBOARD_PASSWORD": "s3cret"})
        ('ops', 's3cret', False)
        >>> credentials({})[::2]
        ('admin', True)
    """
    env = os.environ if environ is None else environ
    username = env.get("DASHBOARD_USERNAME") or "admin"
    password = env.get("DASHBOARD_PASSWORD") or ""
    if password:
        return username, password, False
    return username, secrets.token_urlsafe(12), True


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    backend_url: str | None = None,
    *,
    interval: float = 1.5,
    heartbeat_interval: float = 25.0,
    out: TextIO | None = None,
) -> None:
    """Run the demo dashboard until interrupted, printing its URL and credentials first.

    Args:
        host: the interface to listen on.
        port: the TCP port.
        backend_url: the broadcaster's backend (``"redis://localhost:6379/0"``);
            ``LIVEPANEL_BACKEND_URL``, else in-process memory, when ``None``.
        interval: mean seconds between simulated gateway events (``0``: none).
        heartbeat_interval: the endpoint's heartbeat in seconds; a page shows
            a server that went silent as stale within two.
        out: where to print the URL and credentials (standard output by default).

    Raises:
        SystemExit: uvicorn is not installed (``pip install 'livepanel[demo]'``).

    Example, what ``livepanel demo --port 8080`` does::

        serve(port=8080)
    """
    try:
        import uvicorn
    except ImportError:
        raise SystemExit(
            "livepanel demo needs an ASGI server: pip install 'livepanel[demo]'"
        ) from None
    out = out or sys.stdout
    username, password, generated = credentials()
    backend = backend_url or os.environ.get("LIVEPANEL_BACKEND_URL") or None
    app = DemoApp(
        username=username,
        password=password,
        broadcaster=Broadcaster(backend),
        interval=interval,
        heartbeat_interval=heartbeat_interval,
    )
    shown = f"[{host}]" if ":" in host else host
    print(f"livepanel demo: http://{shown}:{port}/", file=out)
    print(f"  username: {username}", file=out)
    note = "  (generated; set DASHBOARD_PASSWORD to choose one)" if generated else ""
    print(f"  password: {password}{note}", file=out)
    # the backend's own description: a Redis URL's password is masked
    print(f"  backend:  {app.broadcaster.backend.describe()}", file=out, flush=True)
    uvicorn.run(app, host=host, port=port, lifespan="on", log_level="warning")
