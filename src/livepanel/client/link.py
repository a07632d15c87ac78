"""One connection of a client over asyncio streams: its socket and its :class:`ClientWire`.

:class:`Link` reads, writes and closes one socket; what the bytes mean is
:class:`~livepanel.client.wire.ClientWire`'s job, what to do about it the
client's. :func:`refusal` turns a refused handshake into the exception to
raise, asking the endpoint with a plain ``GET`` when a server hides the real
status behind a 403.
"""

from __future__ import annotations

import asyncio
import json

from livepanel.client.endpoint import REDIRECTS, Endpoint, refusal_reason
from livepanel.client.retry import retry_after_header
from livepanel.client.wire import ClientWire, Closed, Rejected, WireEvent
from livepanel.frames import ClientMessage

__all__ = ["READ_SIZE", "Link", "open_socket", "refusal"]

READ_SIZE = 65536
"""Most bytes one read from the socket takes."""


async def open_socket(endpoint: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to the endpoint, with TLS for ``wss://``.

    Raises:
        OSError: the connection or the TLS handshake failed.

    Example::

        reader, writer = await open_socket(Endpoint.parse("ws://localhost:8000/ws"))
    """
    return await asyncio.open_connection(
        endpoint.host,
        endpoint.port,
        ssl=endpoint.ssl,
        server_hostname=endpoint.host if endpoint.ssl is not None else None,
    )


class Link:
    """One WebSocket connection: bytes read go through ``wire``, bytes it queues are written.

    Args:
        reader: the socket's reading side.
        writer: the socket's writing side.
        wire: the sans-I/O protocol of this connection (its request already queued).

    Example::

        reader, writer = await open_socket(endpoint)
        link = Link(reader, writer, ClientWire(endpoint.host_header, target))
        await link.flush()  # the handshake request
        events = link.receive(await link.read())
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: ClientWire
    ) -> None:
        self.wire = wire
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._dropped = False

    @property
    def is_open(self) -> bool:
        """Whether messages can be sent (handshake done, no close started)."""
        return self.wire.is_open

    async def read(self) -> bytes:
        """The next bytes from the socket; ``b""`` at the end of the stream.

        Raises:
            OSError: the socket failed.
        """
        return await self._reader.read(READ_SIZE)

    def receive(self, data: bytes) -> list[WireEvent]:
        """What ``data`` (``b""``: the end of the stream) means.

        Raises:
            ConnectionError: the handshake response is not a valid WebSocket upgrade.
        """
        return self.wire.receive_data(data or None)

    async def flush(self) -> None:
        """Write what the wire has queued (answers to pings, the closing handshake...).

        Raises:
            OSError: the socket failed.
        """
        data = self.wire.data_to_send()
        if data:
            self._writer.write(data)
            async with self._write_lock:
                await self._writer.drain()

    async def send(self, message: ClientMessage) -> None:
        """Send one client message, if the connection is open; a failure is left to the
        reading side, which notices the loss."""
        if not self.wire.is_open:
            return
        self.wire.send_text(json.dumps(message, separators=(",", ":")))
        try:
            await self.flush()
        except OSError:
            pass

    async def drain_close(self, timeout: float) -> None:
        """Read until the server answers our close frame, for at most ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._dropped:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                data = await asyncio.wait_for(self._reader.read(READ_SIZE), remaining)
            except (asyncio.TimeoutError, OSError):
                return
            if any(isinstance(o, Closed) for o in self.receive(data)) or not data:
                return

    def abort(self) -> None:
        """Cut the socket at once (a pending read then sees the end of the stream)."""
        self._writer.transport.abort()

    def drop(self, *, abort: bool) -> None:
        """Let the socket go: cut it, or close it politely."""
        self._dropped = True
        if abort:
            self._writer.transport.abort()
        else:
            self._writer.close()

    async def wait_closed(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the socket to close, then cut it."""
        try:
            await asyncio.wait_for(self._writer.wait_closed(), timeout)
        except (asyncio.TimeoutError, OSError):
            self._writer.transport.abort()


async def refusal(endpoint: Endpoint, rejected: Rejected, target: str) -> Exception:
    """What a handshake answered over HTTP means: a :class:`Redirected` to follow or the
    :class:`~livepanel.client.errors.HandshakeRejected` to raise.

    Example::

        raise await refusal(endpoint, rejected, target)
    """
    if rejected.status in REDIRECTS:
        return endpoint.follow(rejected, target)
    status = rejected.status
    code, _ = refusal_reason(rejected.body)
    if status == 403 and code is None:
        # a server without the ASGI denial-response extension turns every denial
        # into 403; a plain GET to the endpoint answers with the real status
        probed, location = await _probe(endpoint, target)
        if probed in REDIRECTS and location:
            return endpoint.follow(Rejected(probed, ((b"location", location),), b""), target)
        status = probed or status
    retry_after = None
    if status == 429:
        header = next((v for k, v in rejected.headers if k.lower() == b"retry-after"), None)
        retry_after = retry_after_header(header.decode("latin-1") if header is not None else None)
    return endpoint.refusal(status, rejected.body, retry_after)


async def _probe(endpoint: Endpoint, target: str) -> tuple[int | None, bytes]:
    """The status (and ``Location``) of a plain HTTP GET to the endpoint: livepanel runs
    the same checks, and a router that only closes a WebSocket it cannot route (a
    Starlette ``Mount`` at ``/ws``) tells a plain GET where the endpoint is."""
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await open_socket(endpoint)
        lines = [f"GET {target} HTTP/1.1", f"Host: {endpoint.host_header}"]
        lines += [f"{k}: {v}" for k, v in endpoint.headers]
        lines += ["Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1"))
        status_line = await reader.readline()
        parts = status_line.split()
        status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
        location = b""
        for _ in range(100):  # the headers, bounded
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"location":
                location = value.strip()[:2048]
        return status, location
    except (OSError, ValueError):
        return None, b""
    finally:
        if writer is not None:
            writer.transport.abort()
