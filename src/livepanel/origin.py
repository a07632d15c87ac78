"""The origin policy that stops other sites from opening a dashboard's WebSocket.

Browsers send cookies and cached Basic credentials with a cross-site WebSocket
handshake (cross-site WebSocket hijacking), so the ``Origin`` header is checked
before anything else that could trust the request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from livepanel.errors import ConfigurationError

__all__ = ["OriginPolicy", "parse_origin"]

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
# browsers serialize origins in ASCII (IDNA); a host is dot-separated non-empty labels
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int | None  # None only where the scheme has no default


def parse_origin(value: str) -> _Origin | None:
    """Parse ``scheme://host[:port]``; ``None`` when it is anything else.

    A missing port is the scheme's default (80 for ``http``/``ws``, 443 for ``https``/``wss``).

    Example::

        >>> parse_origin("https://Panel.example.com")
        _Origin(scheme='https', host='panel.example.com', port=443)
        >>> parse_origin("https://panel.example.com/path") is None
        True
    """
    # urlsplit silently drops tabs and newlines, so refuse them (and spaces) first
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        return None
    if " " in value:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    host = parts.hostname.lower()
    if not _valid_host(host, bracketed=parts.netloc.startswith("[")):
        return None
    scheme = parts.scheme.lower()
    return _Origin(scheme, host, port or _DEFAULT_PORTS.get(scheme))


def _valid_host(host: str, *, bracketed: bool) -> bool:
    if bracketed:  # an IP literal: only IPv6 belongs between brackets
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _HOST_NAME.fullmatch(host) is not None


def _split_host(value: str) -> tuple[str, int | None] | None:
    """Split a ``Host`` header into host and port (``None`` when it has none)."""
    origin = parse_origin("http://" + value.strip())
    if origin is None:
        return None
    explicit = urlsplit("http://" + value.strip()).port
    return origin.host, explicit


class OriginPolicy:
    """Decides whether a handshake's ``Origin`` may connect.

    Args:
        allowed: ``None`` for same-origin (the ``Origin`` host and port must
            equal the ``Host`` header's), or a list of exact origins
            (``"https://panel.example.com"``), wildcard origins
            (``"https://*.example.com"``: one or more whole labels, never the
            bare domain), ``"*"`` (any origin but ``"null"``) and ``"null"``.

    A request without an ``Origin`` header (not a browser) always passes.

    Example::

        >>> policy = OriginPolicy(["https://*.example.com"])
        >>> policy.allows("https://panel.example.com", host="panel.example.com")
        True
        >>> policy.allows("https://example.com", host="example.com")
        False
        >>> OriginPolicy().allows("https://evil.test", host="panel.example.com")  # same-origin
        False
    """

    def __init__(self, allowed: Sequence[str] | None = None) -> None:
        self.same_origin = allowed is None
        self.any = False
        self.null = False
        self._exact: set[_Origin] = set()
        self._suffixes: list[tuple[str, str, int | None]] = []
        if allowed is None:
            return
        if isinstance(allowed, str):
            raise ConfigurationError(
                "allowed_origins is a list of origins, e.g. ['https://panel.example.com']"
            )
        for entry in allowed:
            self._add(entry)

    def _add(self, entry: str) -> None:
        if not isinstance(entry, str):
            raise ConfigurationError(
                f"allowed_origins: {entry!r} is not a string; use 'https://host[:port]', "
                "'https://*.example.com', '*' or 'null'"
            )
        if entry == "*":
            self.any = True
            return
        if entry == "null":
            self.null = True
            return
        wildcard = "://*." in entry
        parsed = parse_origin(entry.replace("://*.", "://wildcard.", 1) if wildcard else entry)
        if (
            parsed is None
            or "*" in entry.replace("://*.", "", 1)
            or entry.endswith("/")
            or (wildcard and parsed.host.rstrip(".") == "wildcard")  # "*." names no domain
        ):
            raise ConfigurationError(
                f"allowed_origins: {entry!r} is not an origin; use 'https://host[:port]', "
                "'https://*.example.com', '*' or 'null'"
            )
        if wildcard:
            suffix = parsed.host[len("wildcard") :]
            self._suffixes.append((parsed.scheme, suffix, parsed.port))
        else:
            self._exact.add(parsed)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a handshake with these ``Origin`` and ``Host`` headers may go on."""
        if origin is None:
            return True
        if origin == "null":
            return self.null
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        if self.same_origin:
            return self._same_origin(parsed, host)
        if self.any or parsed in self._exact:
            return True
        for scheme, suffix, port in self._suffixes:
            if (
                parsed.scheme == scheme
                and parsed.port == port
                and parsed.host.endswith(suffix)
                and len(parsed.host) > len(suffix)
            ):
                return True
        return False

    @staticmethod
    def _same_origin(origin: _Origin, host: str | None) -> bool:
        if host is None:
            return False
        split = _split_host(host)
        if split is None:
            return False
        host_name, host_port = split
        # TLS often ends at a proxy, so a Host without a port takes the Origin scheme's default
        default = _DEFAULT_PORTS.get(origin.scheme)
        return host_name == origin.host and (host_port or default) == origin.port
