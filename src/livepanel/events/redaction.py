"""What never leaves the process: secret-looking values of a payload, and passwords in URLs.

:func:`redact_payload` is the last step of publishing (after validation): it
replaces values under secret-looking keys, masks token shapes inside strings
and cuts long command output. :func:`redact_url` masks the password of a URL
before it is logged or shown. See ``docs/authentication.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

__all__ = [
    "REDACTED",
    "SECRET_KEY_WORDS",
    "SECRET_PATTERNS",
    "STREAM_OUTPUT_LIMIT",
    "URL_SECRET_KEYS",
    "add_secret_pattern",
    "looks_secret",
    "redact_payload",
    "redact_url",
]

REDACTED = "[redacted]"
"""What a secret-looking value becomes: ``{"apiKey": "sk-1"}`` is sent as ``{"apiKey": REDACTED}``.

A value is secret-looking when its key, lowercased with ``_`` and ``-``
removed, contains one of :data:`SECRET_KEY_WORDS`. Inside every other string
value, the token shapes of :data:`SECRET_PATTERNS` (and those added with
:func:`add_secret_pattern`) are replaced by it too.
"""
SECRET_KEY_WORDS = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "credential",
    "cookie",
    "authorization",
)
"""Key words whose values are redacted whole: ``{"db_passwd": "x"}`` is sent as ``{"db_passwd":
"[redacted]"}`` (``credential`` covers ``credentials``, ``privatekey`` covers ``private_key``)."""


def _token(prefix: str, body: str) -> str:
    """A token that starts a word, written literal first so the regex engine can skip ahead."""
    return f"{prefix}(?<![A-Za-z0-9_-]{prefix}){body}"


SECRET_PATTERNS: tuple[str, ...] = (
    _token("sk-", r"[A-Za-z0-9_-]{20,}"),
    *(_token(f"gh{kind}_", r"[A-Za-z0-9]{30,}") for kind in "oprsu"),
    _token("github_pat_", r"[A-Za-z0-9_]{22,}"),
    *(_token(f"xox{kind}-", r"[A-Za-z0-9-]{10,}") for kind in "abeprs"),
    *(_token(prefix, r"[A-Z0-9]{16}(?![A-Za-z0-9])") for prefix in ("AKIA", "ASIA")),
    _token("eyJ", r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    *(
        _token(word, r"[ \t]+(?P<secret>[A-Za-z0-9._~+/=-]{8,})")
        for word in ("Bearer", "bearer", "BEARER")
    ),
    r"://[^\s/:@]*:(?P<secret>[^\s/@]+)@",
)
"""Token shapes redacted inside string values, on by default, in this order: API keys
``sk-…`` (OpenAI and alike, 20+ characters after ``sk-``); GitHub tokens ``ghp_…``,
``gho_…``, ``ghs_…``, ``ghu_…``, ``ghr_…`` and ``github_pat_…``; Slack tokens ``xoxb-…``,
``xoxp-…``, ``xoxa-…``, ``xoxs-…`` and alike; AWS access key ids ``AKIA…``/``ASIA…``; JSON Web
Tokens ``eyJ….….…``; the credentials after ``Bearer`` (or ``bearer``, ``BEARER``); and the
password of a URL ``scheme://user:password@host`` (user and ``@`` kept). Each starts with a
literal, and a token must start a word (``mask-…`` is not an ``sk-`` key), which keeps the
scan of a string one pass.

A group named ``secret`` marks the part replaced; without it the whole match is. Example:
``"curl -H 'Authorization: Bearer abcdef123456' https://u:hunter2@example.com"`` is sent as
``"curl -H 'Authorization: Bearer [redacted]' https://u:[redacted]@example.com"``.
"""
URL_SECRET_KEYS = frozenset({"ticket", "sig", "signature", "code", "key"})
"""Query keys whose values :func:`redact_url` masks besides the secret-looking ones: a
``?ticket=`` (:class:`~livepanel.Tickets`), a signed URL's signature, an OAuth ``code``.
URL-only: a payload's ``ticket`` or ``code`` field is ordinary data."""
STREAM_OUTPUT_LIMIT = 65536
"""Most UTF-8 bytes kept of ``stdout`` / ``stderr``, truncation marker included."""

_OUTPUT_KEYS = frozenset({"stdout", "stderr"})
_USERINFO_PASSWORD = re.compile(r"(//[^/@:]*:)[^/]*@")
# a value runs to the next "&": a "#" inside a secret is masked with it, not shown as a fragment
_QUERY_PARAM = re.compile(r"([?&])([^=&#\s]*)=([^&\s]*)")


# --------------------------------------------------------------------------- payloads


def looks_secret(key: str) -> bool:
    """Whether the value under ``key`` is redacted whole: the key, lowercased with ``_`` and
    ``-`` removed, contains one of :data:`SECRET_KEY_WORDS`.

    Example::

        >>> looks_secret("db_Password"), looks_secret("X-Api-Key"), looks_secret("agentId")
        (True, True, False)
    """
    folded = key.lower().replace("_", "").replace("-", "")
    return any(word in folded for word in SECRET_KEY_WORDS)


class _Scrubber:
    """Every secret pattern in one compiled regex, so a string is scanned once."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self.each = [re.compile(p) for p in self.patterns]  # to tell which one matched
        # alternatives left bare (no wrapping group) so that, when each starts with a
        # literal, the engine jumps from one candidate character to the next
        parts = [p.replace("(?P<secret>", f"(?P<s{n}>") for n, p in enumerate(self.patterns)]
        self.regex = re.compile("|".join(parts))

    def scrub(self, text: str) -> str:
        return self.regex.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        start, end = match.span()
        for n, pattern in enumerate(self.each):
            if pattern.match(match.string, start) is None:
                continue
            if "secret" not in pattern.groupindex or match.start(f"s{n}") < 0:
                return REDACTED
            inner_start, inner_end = match.span(f"s{n}")
            text = match.string
            return text[start:inner_start] + REDACTED + text[inner_end:end]
        return REDACTED


_scrubber = _Scrubber(SECRET_PATTERNS)


def add_secret_pattern(pattern: str) -> None:
    """Redact one more token shape inside string values, from now on, in this process.

    ``pattern`` is a regular expression; a match is replaced by
    :data:`REDACTED`, or only its group named ``secret`` when it has one.
    Other groups should not be named. It runs on every string of every
    published payload, so keep it linear-time: no nested quantifiers such as
    ``(a+)+``, and start it with something specific (a literal prefix, a
    lookbehind like ``(?<![A-Za-z0-9_-])``).

    Raises:
        ValueError: ``pattern`` does not compile, or matches the empty string.

    Example::

        >>> add_secret_pattern(r"(?<![A-Za-z0-9_])lp_live_[A-Za-z0-9]{24}")
        >>> redact_payload({"label": "key lp_live_0123456789abcdefghijklmn"})["label"]
        'key [redacted]'
    """
    global _scrubber
    try:
        compiled = re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise ValueError(
            f"add_secret_pattern: {pattern!r} is not a regular expression: {exc}"
        ) from None
    if compiled.fullmatch(""):
        raise ValueError(f"add_secret_pattern: {pattern!r} matches the empty string")
    if pattern not in _scrubber.patterns:
        _scrubber = _Scrubber((*_scrubber.patterns, pattern))


def _scrub(text: str) -> str:
    return _scrubber.scrub(text)


def _cut_output(text: str) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= STREAM_OUTPUT_LIMIT:
        return text
    marker = f"\n[truncated {len(encoded)} bytes to {STREAM_OUTPUT_LIMIT}]"
    keep = STREAM_OUTPUT_LIMIT - len(marker.encode("utf-8"))
    return encoded[:keep].decode("utf-8", errors="ignore") + marker


def redact_payload(value: Any, key: str | None = None) -> Any:
    """A wire-form payload as clients may see it: secret-looking values replaced by
    :data:`REDACTED` at any depth, token shapes masked inside strings, and ``stdout`` /
    ``stderr`` cut to :data:`STREAM_OUTPUT_LIMIT` bytes. The value given is left unchanged.

    Args:
        value: a payload in its wire form (JSON types only).
        key: the key ``value`` is found under, when it is not the whole payload.

    Example::

        >>> redact_payload({"user": "ada", "apiKey": "k1", "db": {"password": "p"}})
        {'user': 'ada', 'apiKey': '[redacted]', 'db': {'password': '[redacted]'}}
    """
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            k = str(k)
            out[k] = REDACTED if looks_secret(k) else redact_payload(v, k)
        return out
    if isinstance(value, list):
        return [redact_payload(v, key) for v in value]
    if isinstance(value, str):
        if key in _OUTPUT_KEYS:  # cut first: scanning costs at most the limit, then cut again
            return _cut_output(_scrub(_cut_output(value)))
        return _scrub(value)
    return value


# --------------------------------------------------------------------------- URLs


def redact_url(url: str) -> str:
    """``url`` with its password (``user:password@``) and every query value under a
    secret-looking key (:func:`looks_secret`: ``ssl_password``, ``sentinel_password``,
    ``access_token``...) or a key of :data:`URL_SECRET_KEYS` (``ticket``...) shown as
    ``***``: safe for logs, reprs and error messages. It also works on a message that
    quotes a URL.

    Example::

        >>> redact_url("rediss://app:s3cret@cache:6380/0?ssl_password=x&db=1")
        'rediss://app:***@cache:6380/0?ssl_password=***&db=1'
        >>> redact_url("wss://admin:hunter2@panel.example.com/ws?ticket=v1.alice.f00d")
        'wss://admin:***@panel.example.com/ws?ticket=***'
    """
    url = _USERINFO_PASSWORD.sub(r"\1***@", url)
    return _QUERY_PARAM.sub(_mask_query_value, url)


def _mask_query_value(match: re.Match[str]) -> str:
    separator, key, _ = match.groups()
    name = unquote(key)
    secret = looks_secret(name) or name.lower() in URL_SECRET_KEYS
    return f"{separator}{key}=***" if secret else match.group(0)
