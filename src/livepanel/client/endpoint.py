"""Where and how a client connects, without I/O: the URL read once, and the server's refusals.

:class:`Endpoint` holds what every connection attempt needs (host, port, TLS,
the request target, the handshake's headers, Basic credentials included) and
decides what an HTTP answer to the handshake means: a redirect to follow
within the origin, or a :class:`~livepanel.client.errors.HandshakeRejected`
to raise.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import ssl as ssl_module
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit

from livepanel.client.errors import AuthenticationError, HandshakeRejected, PermissionDenied
from livepanel.client.wire import Rejected
from livepanel.events.redaction import redact_url

__all__ = ["MAX_REDIRECTS", "REDIRECTS", "Endpoint", "Redirected", "refusal_reason"]

MAX_REDIRECTS = 3
"""Handshake redirects a client follows at most, within one origin."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})
"""The HTTP statuses of a redirect."""
_CONNECT_PARAMS = ("types", "since", "batch", "state")


class Redirected(Exception):
    """The handshake was redirected within the origin: try again at :attr:`endpoint`.

    Example::

        try:
            await handshake(endpoint)
        except Redirected as moved:
            endpoint = moved.endpoint
    """

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint.path)
        self.endpoint = endpoint


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A livepanel endpoint as a client reaches it.

    Attributes:
        url: the URL with its password and its ``ticket`` (and any other secret query
            value) masked: safe to log.
        host: the host name or address to connect to.
        port: the TCP port (443 or 80 when the URL names none).
        host_header: the ``Host`` header (``"example.com:8080"``).
        path: the request path.
        query: the URL's own query parameters, kept on every attempt.
        headers: the handshake's extra headers, ``Authorization`` included.
        ssl: the TLS context, or ``None`` for ``ws://``.

    Example::

        >>> endpoint = Endpoint.parse("ws://admin:pw@localhost:8000/ws?tenant=t1")
        >>> endpoint.url, endpoint.host_header, endpoint.target([("batch", "1")])
        ('ws://admin:***@localhost:8000/ws?tenant=t1', 'localhost:8000', '/ws?tenant=t1&batch=1')
    """

    url: str
    host: str
    port: int
    host_header: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...] = dataclasses.field(repr=False)
    ssl: ssl_module.SSLContext | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        origin: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> Endpoint:
        """Read ``url``; ``user:password@`` in it is used when ``username`` is not given.

        Raises:
            ValueError: not a ``ws://`` or ``wss://`` URL, an invalid port, ``ssl``
                with ``ws://``, or a header holding a line break.

        Example::

            >>> Endpoint.parse("wss://panel.example.com/ws").port
            443
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"expected a ws:// or wss:// URL, got {redact_url(url)!r}")
        if scheme == "ws" and ssl is not None:
            raise ValueError("ssl= is only for wss:// URLs")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"invalid port in {redact_url(url)!r}") from None
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        default_port = 443 if scheme == "wss" else 80
        if scheme == "wss" and ssl is None:
            ssl = ssl_module.create_default_context()
        return cls(
            url=redact_url(url),
            host=host,
            port=port or default_port,
            host_header=shown if port in (None, default_port) else f"{shown}:{port}",
            path=parts.path or "/",
            query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
            headers=_request_headers(
                headers,
                username if username is not None else _unquoted(parts.username),
                password if password is not None else _unquoted(parts.password),
                origin,
            ),
            ssl=ssl,
        )

    @property
    def scheme(self) -> str:
        """``"wss"`` or ``"ws"``."""
        return "wss" if self.ssl is not None else "ws"

    def target(self, params: Iterable[tuple[str, str]]) -> str:
        """The request target: the path, the URL's own query, then ``params`` (the
        connect parameters ``types``, ``since``, ``batch`` and ``state`` come only from
        ``params``)."""
        kept = [(k, v) for k, v in self.query if k not in _CONNECT_PARAMS]
        query = urlencode([*kept, *params], safe="*,:?")
        return f"{self.path}?{query}" if query else self.path

    def follow(self, rejected: Rejected, target: str) -> Redirected | HandshakeRejected:
        """A redirect to follow (same origin: the credentials go along), or the refusal."""
        location = next(
            (v.decode("latin-1") for k, v in rejected.headers if k.lower() == b"location"), ""
        )
        here = f"{self.scheme}://{self.host_header}{target}"
        there = urlsplit(urljoin(here, location.strip()))
        moved_scheme = {"http": "ws", "https": "wss"}.get(there.scheme, there.scheme)
        try:
            port = there.port or (443 if moved_scheme == "wss" else 80)
        except ValueError:
            port = -1
        if (moved_scheme, there.hostname, port) != (self.scheme, self.host, self.port):
            shown = redact_url(location)[:200]
            return HandshakeRejected(
                rejected.status,
                f"{self.url}: the server redirects to {shown!r}, another origin; not followed "
                "(connect to that URL if you trust it)",
            )
        query = tuple(parse_qsl(there.query, keep_blank_values=True))
        return Redirected(dataclasses.replace(self, path=there.path or "/", query=query))

    def refusal(
        self, status: int, body: bytes, retry_after: float | None = None
    ) -> HandshakeRejected:
        """The exception for a handshake answered with ``status`` and ``body``: 401 is an
        :class:`~livepanel.client.errors.AuthenticationError`, 403 a
        :class:`~livepanel.client.errors.PermissionDenied`."""
        code, message = refusal_reason(body)
        why = f": {redact_url(message)}" if message else ""  # a server may quote the URL back
        if status == 401:
            hint = why or "; check the username and password, or the ticket"
            failed = f"{self.url}: authentication failed (401){hint}"
            return AuthenticationError(status, failed, code)
        if status == 403:
            return PermissionDenied(status, f"{self.url}: permission denied (403){why}", code)
        if status < 300 or status == 404:  # a web page or nothing: the path is wrong
            return HandshakeRejected(
                status,
                f"{self.url}: no livepanel endpoint at this path (the server answered {status} "
                "to the WebSocket handshake); check the URL's path, e.g. /ws",
                code,
            )
        answered = f"{self.url}: the server answered {status}{why}"
        return HandshakeRejected(status, answered, code, retry_after)


def refusal_reason(body: bytes) -> tuple[str | None, str]:
    """livepanel's error code and message from a refusal's JSON body, when it has one.

    Example::

        >>> refusal_reason(b'{"error": "origin_not_allowed", "message": "not listed"}')
        ('origin_not_allowed', 'not listed')
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    code = data.get("error") if isinstance(data.get("error"), str) else None
    return code, str(data.get("message", ""))


def _unquoted(value: str | None) -> str | None:
    return unquote(value) if value is not None else None


def _request_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    username: str | None,
    password: str | None,
    origin: str | None,
) -> tuple[tuple[str, str], ...]:
    items = list(headers.items() if isinstance(headers, Mapping) else headers or ())
    for name, value in items:
        if any(c in f"{name}{value}" for c in "\r\n\0"):
            raise ValueError(f"header {name!r} contains a line break or NUL")
    if username is not None:
        if ":" in username:
            raise ValueError("a Basic Auth username cannot contain ':'")
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
        items.append(("Authorization", f"Basic {token}"))
    if origin is not None:
        items.append(("Origin", origin))
    return tuple(items)
