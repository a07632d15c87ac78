"""HTTP/1.1 by hand for the doctor's probes: a request, a head, a body, an event stream."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from livepanel.client.link import READ_SIZE

_MAX_HEADERS = 100
_MAX_BODY = 65536


@dataclasses.dataclass
class Answer:
    """A plain HTTP answer: status, headers (names lowercased), the start of its body."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    sent_at: float = 0.0
    received_at: float = 0.0
    peercert: dict[str, Any] | None = None


# ---------------------------------------------------------------------- HTTP/1.1 by hand


def write_request(
    writer: asyncio.StreamWriter, host: str, target: str, headers: Iterable[tuple[str, str]]
) -> None:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "User-Agent: livepanel-doctor"]
    lines += [f"{k}: {v}" for k, v in headers]
    writer.write(("\r\n".join([*lines, "", ""])).encode("latin-1"))


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers of an HTTP/1.x response (bounded in lines)."""
    parts = (await reader.readline()).split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError("the answer is not HTTP")
    fields: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            return int(parts[1]), fields
        if not line:
            raise ValueError("the connection ended inside the response headers")
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip()
    raise ValueError(f"more than {_MAX_HEADERS} response headers")


async def read_body(reader: asyncio.StreamReader, fields: dict[str, str]) -> bytes:
    length = fields.get("content-length", "")
    if length.isdigit():
        return await reader.read(min(int(length), _MAX_BODY))
    if "chunked" in fields.get("transfer-encoding", "").lower():
        out = bytearray()
        async for piece in chunks(reader):
            out += piece
            if len(out) >= _MAX_BODY:
                break
        return bytes(out)
    return b""  # no length: the start of the body says nothing we need


async def chunks(reader: asyncio.StreamReader) -> Any:
    """The pieces of a chunked body as they arrive."""
    while True:
        line = await reader.readline()
        if not line:
            return  # the connection ended (cut, or closed without the last chunk)
        size_line = line.split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ValueError("a malformed chunked body") from None
        if size == 0:
            return
        if size > _MAX_BODY:
            raise ValueError("a chunk larger than expected of an event stream")
        yield await reader.readexactly(size)
        await reader.readline()


async def collect_messages(
    reader: asyncio.StreamReader,
    fields: dict[str, str],
    arrivals: list[tuple[float, str]],
    until: float,
    loop: asyncio.AbstractEventLoop,
    rewatch: Callable[[str], float | None] = lambda message: None,
) -> float | None:
    """Note the arrival of each Server-Sent Events message (``welcome``, ``ping``...); the
    time the stream ended, or ``None`` when it was still open at ``until``."""
    chunked = "chunked" in fields.get("transfer-encoding", "").lower()
    pieces = chunks(reader) if chunked else None
    text = ""
    while (remaining := until - loop.time()) > 0:
        try:
            if pieces is not None:
                piece = await asyncio.wait_for(pieces.__anext__(), remaining)
            else:
                piece = await asyncio.wait_for(reader.read(READ_SIZE), remaining)
        except asyncio.TimeoutError:
            return None
        except (StopAsyncIteration, OSError, asyncio.IncompleteReadError):
            return loop.time()
        if not piece:
            return loop.time()
        text += piece.decode("utf-8", "replace").replace("\r\n", "\n")
        *messages, text = text.split("\n\n")
        for message in messages:
            kind = message_kind(message)
            arrivals.append((loop.time(), kind))
            if kind == "welcome" and (seconds := rewatch(message)) is not None:
                until = loop.time() + seconds  # the stream's own welcome tells how long to watch
        if len(text) > _MAX_BODY:
            raise ValueError("an event stream message without an end")
    return None


def message_kind(message: str) -> str:
    for line in message.split("\n"):
        if line.startswith("event:"):
            return line[6:].strip()
        if line.startswith(":"):
            return line[1:].strip() or "comment"
    return "message"


def same_origin_path(here: str, location: str) -> str | None:
    """The path a redirect leads to when it stays within ``here``'s origin, else ``None``."""
    from urllib.parse import urljoin

    there = urlsplit(urljoin(here, location.strip()))
    base = urlsplit(here)
    if (there.scheme, there.netloc.lower()) != (base.scheme, base.netloc.lower()):
        return None
    return urlunsplit(("", "", there.path or "/", "", "")) or "/"


def why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
