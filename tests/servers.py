"""Real ASGI servers on 127.0.0.1 for integration tests, each in its own thread and loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.ports import free_port as free_port

SERVERS = ("uvicorn-websockets", "uvicorn-wsproto", "hypercorn")


@dataclass
class RunningServer:
    kind: str
    host: str
    port: int
    scheme: str = "http"

    @property
    def http_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://{self.host}:{self.port}"


def _wait_listening(port: int, thread: threading.Thread, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the server thread exited during start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"server did not listen on {port}")


@contextlib.contextmanager
def run_server(
    app: Any,
    kind: str,
    *,
    lifespan: bool | str = False,
    certfile: str | None = None,
    keyfile: str | None = None,
    timeout: float = 10.0,
    port: int | None = None,
    **uvicorn_options: Any,
) -> Iterator[RunningServer]:
    """Serve ``app`` with ``kind`` (one of SERVERS) until the block ends.

    ``port`` restarts a server where an earlier one ran; by default a free port is taken.
    """
    port = port or free_port()
    scheme = "https" if certfile else "http"
    if kind.startswith("uvicorn"):
        import uvicorn

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ws=kind.partition("-")[2],
            lifespan=lifespan if isinstance(lifespan, str) else ("on" if lifespan else "off"),
            log_level="info",
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            **uvicorn_options,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"{kind}:{port}", daemon=True)
        thread.start()
        try:
            _wait_listening(port, thread, time.monotonic() + timeout)
            while not server.started and thread.is_alive():
                time.sleep(0.01)
            yield RunningServer(kind, "127.0.0.1", port, scheme)
        finally:
            server.should_exit = True
            thread.join(timeout)
    elif kind == "hypercorn":
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.loglevel = "INFO"
        config.graceful_timeout = 1.0
        if certfile:
            config.certfile = certfile
            config.keyfile = keyfile
        loop = asyncio.new_event_loop()
        done = asyncio.Event()

        async def main() -> None:
            await serve(
                app if lifespan else _NoLifespan(app),
                config,
                shutdown_trigger=done.wait,  # type: ignore[arg-type]
            )

        def target() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        thread = threading.Thread(target=target, name=f"hypercorn:{port}", daemon=True)
        thread.start()
        try:
            _wait_listening(port, thread, time.monotonic() + timeout)
            yield RunningServer(kind, "127.0.0.1", port, scheme)
        finally:
            if not loop.is_closed():
                loop.call_soon_threadsafe(done.set)
            thread.join(timeout)
    else:
        raise ValueError(f"unknown server kind {kind!r}")


class _NoLifespan:
    """Refuses lifespan like uvicorn's lifespan='off', so both servers start apps the same way."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("lifespan not supported here")  # hypercorn then carries on
        await self.app(scope, receive, send)
