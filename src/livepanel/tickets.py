"""Connect tickets: signed, short-lived, single-use credentials for ``?ticket=`` on the connect URL.

A page that cannot send Basic credentials (a single-page app with its own
login, or served from another origin) asks an authenticated REST endpoint of
yours for a ticket just before it connects, and puts it in the URL:
``wss://host/ws?ticket=<t>``. :class:`Tickets` mints and checks them;
:class:`TicketAuth` is the :class:`~livepanel.auth.Authenticator` that reads
them. See ``docs/audiences.md``.

A ticket is ``<payload>.<signature>``, both base64url without padding: the
payload is JSON holding the user, the audiences, the expiry (Unix time) and a
random nonce; the signature is HMAC-SHA256 of it under the secret, checked in
constant time. The nonce is consumed on first use through the backend's
single-use claims (:class:`~livepanel.backends.base.SingleUseClaims`): in
this process's memory with the memory backend, and with ``SET
<stream>:ticket:<nonce> 1 NX PX <ms>`` in Redis, so that a ticket is accepted
once across every worker. With more than one worker and claims that are not
shared between them, :class:`Tickets` refuses to run rather than accept a
ticket once per worker.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from asgiref.typing import WWWScope

from livepanel.auth import made_by_script
from livepanel.backends.base import Backend, SingleUseClaims, single_use_claims_of
from livepanel.backends.memory import InProcessClaims
from livepanel.errors import BackendUnavailable, ConfigurationError
from livepanel.mounting import Mounted, broadcaster_of

if TYPE_CHECKING:
    from livepanel.broadcaster import Broadcaster

__all__ = [
    "MAX_TICKET_LENGTH",
    "MIN_SECRET_BYTES",
    "Ticket",
    "TicketAuth",
    "TicketPrincipal",
    "TicketRedactionFilter",
    "Tickets",
    "redact_tickets",
]

logger = logging.getLogger("livepanel")

MIN_SECRET_BYTES = 32
"""The shortest secret :class:`Tickets` accepts, in bytes (256 bits, the size of the MAC)."""

MAX_TICKET_LENGTH = 4096
"""Longer ``?ticket=`` values are refused before they are decoded."""

_DOMAIN = b"livepanel-ticket-v1\x00"  # a signature made for anything else never verifies here
_NONCE_BYTES = 16


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64decode(text: str) -> bytes:
    """Strict base64url: the alphabet only, and the one canonical spelling of the bytes."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(data) != text:  # unused low bits set: another spelling of the same bytes
        raise ValueError("not canonical base64url")
    return data


@dataclasses.dataclass(frozen=True)
class Ticket:
    """What a valid ticket says: who, which audiences, until when, and its nonce.

    Example::

        ticket = tickets.verify(text)  # None unless signed by us and not expired
        ticket.user, ticket.audiences  # ("alice", frozenset({"team:ops"}))
    """

    user: str
    audiences: frozenset[str] | None
    expires: float
    """Unix time after which the ticket is refused."""
    nonce: str


@dataclasses.dataclass(frozen=True)
class TicketPrincipal:
    """The principal :class:`TicketAuth` returns: the ticket's user and audiences.

    ``LivePanelApp`` counts connections under ``username``; and without an
    ``audiences=`` function of its own it gives the connection the
    principal's ``audiences`` (``None``: every event).

    Example::

        TicketPrincipal(username="alice", audiences=frozenset({"team:ops", "user:alice"}))
    """

    username: str
    audiences: frozenset[str] | None


class Tickets:
    """Mints and redeems connect tickets.

    Args:
        secret: the HMAC key, at least :data:`MIN_SECRET_BYTES` bytes (a
            ``str`` counts in UTF-8); the same in every worker that redeems
            the tickets. ``secrets.token_urlsafe(32)`` makes a good one.
        ttl: seconds a ticket stays valid after :meth:`issue`.
        broadcaster: whose backend remembers used nonces; the default
            broadcaster (looked up at each use) when ``None``. With a
            ``RedisBackend`` a ticket is accepted once across all workers;
            with the memory backend, once in this process; with a backend
            without single-use claims, once by this object (create one
            ``Tickets`` and share it). When your ``LivePanelApp`` has a
            broadcaster of its own, pass that one, or the ``LivePanelApp``
            (or ``LivePanelMiddleware``) itself: the worker check below
            then runs here, not at the first ticket.
        workers: how many worker processes redeem tickets; ``None`` reads
            ``WEB_CONCURRENCY`` (which uvicorn's ``--workers`` and
            gunicorn's ``-w`` default to), else 1. With more than one, the
            backend must declare single-use claims shared between processes.

    Raises:
        ConfigurationError: a short secret, a ``ttl`` that is not a positive
            number of seconds, a malformed ``workers`` or ``WEB_CONCURRENCY``,
            or more than one worker with a backend whose single-use claims
            do not reach them all.

    Example::

        tickets = Tickets(os.environ["LIVEPANEL_TICKET_SECRET"], ttl=30)
        text = tickets.issue("alice", audiences=["team:ops", "user:alice"])
        app.mount("/ws", LivePanelApp(auth=TicketAuth(tickets)))
    """

    def __init__(
        self,
        secret: str | bytes,
        ttl: float = 30.0,
        *,
        broadcaster: Broadcaster | Mounted[Broadcaster] | None = None,
        workers: int | None = None,
    ) -> None:
        key = _secret_key(secret)
        if not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
            raise ConfigurationError("Tickets: ttl must be a positive number of seconds")
        self._key = key
        self.ttl = float(ttl)
        self._broadcaster = broadcaster
        self.workers, self._workers_from = _worker_count(workers)
        self._clock: Callable[[], float] = time.time  # wall clock: tickets cross hosts
        self._used = InProcessClaims()  # for a backend without single-use claims
        if broadcaster is not None:
            self._claims(broadcaster_of(broadcaster).backend)  # refuse now, not at use

    @classmethod
    def from_env(
        cls,
        var: str = "LIVEPANEL_TICKET_SECRET",
        ttl: float = 30.0,
        *,
        broadcaster: Broadcaster | Mounted[Broadcaster] | None = None,
        workers: int | None = None,
    ) -> Tickets:
        """Tickets signed with the secret in an environment variable, read now.

        Example::

            tickets = Tickets.from_env()  # LIVEPANEL_TICKET_SECRET

        Raises:
            ConfigurationError: the variable is unset, empty or too short; or see
                :class:`Tickets`.
        """
        secret = os.environ.get(var, "")
        if not secret:
            raise ConfigurationError(
                f"Tickets.from_env: {var} is not set; set it to a random secret of at least "
                f"{MIN_SECRET_BYTES} bytes, the same in every worker"
            )
        try:
            _secret_key(secret)
        except ConfigurationError as exc:
            raise ConfigurationError(f"Tickets.from_env: {var}: {exc}") from None
        return cls(secret, ttl, broadcaster=broadcaster, workers=workers)

    @property
    def broadcaster(self) -> Broadcaster:
        """The broadcaster whose backend remembers used tickets."""
        if self._broadcaster is not None:
            return broadcaster_of(self._broadcaster)  # a mounted app's, looked up at each use
        from livepanel.broadcaster import get_broadcaster

        return get_broadcaster()

    # ------------------------------------------------------------------ minting

    def issue(self, user: str, audiences: Iterable[str] | None = None) -> str:
        """A ticket for ``user`` with ``audiences`` (``None``: sees every event), valid ``ttl`` s.

        Call it from a REST endpoint that has authenticated the user already;
        the ticket is a credential: send it over HTTPS, never log it.

        Example::

            @app.post("/api/livepanel-ticket")
            def ticket(user = Depends(current_user)):
                return {"ticket": tickets.issue(user.name, [f"team:{user.team}"])}

        Raises:
            ValueError: an empty user, an audience that is not a string, or a
                ticket longer than :data:`MAX_TICKET_LENGTH`.
        """
        if not isinstance(user, str) or not user:
            raise ValueError("Tickets.issue: user must be a non-empty string")
        listed: list[str] | None = None
        if audiences is not None:
            if isinstance(audiences, str):
                raise ValueError('Tickets.issue: audiences is a list of strings, e.g. ["team:ops"]')
            given = list(audiences)
            if not all(isinstance(a, str) for a in given):
                raise ValueError("Tickets.issue: every audience must be a string")
            listed = sorted(set(given))
        body = {
            "u": user,
            "a": listed,
            "e": round(self._clock() + self.ttl, 3),
            "n": _b64encode(secrets.token_bytes(_NONCE_BYTES)),
        }
        payload = _b64encode(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        text = f"{payload}.{_b64encode(self._sign(payload))}"
        if len(text) > MAX_TICKET_LENGTH:
            raise ValueError(
                f"Tickets.issue: the ticket would be {len(text)} characters, more than "
                f"{MAX_TICKET_LENGTH}; use fewer or shorter audiences"
            )
        return text

    def _sign(self, payload: str) -> bytes:
        return hmac.new(self._key, _DOMAIN + payload.encode("ascii"), hashlib.sha256).digest()

    # ------------------------------------------------------------------ checking

    def verify(self, text: str) -> Ticket | None:
        """The ticket's content when it is ours and not expired, else ``None``; consumes nothing.

        Example::

            >>> Tickets("x" * 32).verify("forged.ticket") is None
            True
        """
        if not isinstance(text, str) or len(text) > MAX_TICKET_LENGTH:
            return None
        payload, dot, signature = text.partition(".")
        if not dot:
            return None
        try:
            given = _b64decode(signature)
            _b64decode(payload)
        except (ValueError, binascii.Error):
            return None
        if not hmac.compare_digest(given, self._sign(payload)):
            return None
        # signed by us: the payload is what issue() wrote
        try:
            body = json.loads(_b64decode(payload))
            user, audiences, expires, nonce = body["u"], body["a"], body["e"], body["n"]
        except (ValueError, binascii.Error, KeyError, TypeError):
            return None
        if not isinstance(user, str) or not isinstance(nonce, str):
            return None
        if not isinstance(expires, (int, float)) or self._clock() >= expires:
            return None
        if audiences is not None and not (
            isinstance(audiences, list) and all(isinstance(a, str) for a in audiences)
        ):
            return None
        return Ticket(user, None if audiences is None else frozenset(audiences), expires, nonce)

    async def redeem(self, text: str) -> Ticket | None:
        """Verify the ticket and consume it: its content the first time, ``None`` ever after.

        Example::

            ticket = await tickets.redeem(text)
            if ticket is None:
                ...  # forged, tampered with, expired, revoked or used already: refuse

        Raises:
            BackendUnavailable: Redis could not say whether the ticket was used.
        """
        ticket = self.verify(text)
        if ticket is None or self.revoked(ticket):
            return None
        first = await self._consume(ticket)
        return ticket if first else None

    def revoked(self, ticket: Ticket) -> bool:
        """Whether ``Broadcaster.disconnect()`` named the ticket's user or one of its audiences
        after it was issued (on any worker, once this one heard of it).

        Example::

            ticket = tickets.verify(text)
            if ticket is not None and not tickets.revoked(ticket):
                ...  # still good
        """
        # the expiry is written to the millisecond: the ticket may be up to that much older
        issued = ticket.expires - self.ttl - 0.001
        return self.broadcaster.revocations.given_since(issued, ticket.user, ticket.audiences)

    async def _consume(self, ticket: Ticket) -> bool:
        """Mark the nonce used; ``True`` when nobody had (here, or on any worker on Redis).

        Raises:
            BackendUnavailable: the backend could not say whether it was used.
            ConfigurationError: more than one worker, and claims that do not reach them all.
        """
        broadcaster = self.broadcaster
        claims = self._claims(broadcaster.backend)
        # keep it at least until the ticket expires, and as long as a ttl (clock skew)
        keep = max(ticket.expires - self._clock(), self.ttl)
        if claims is None:
            return self._used.claim(ticket.nonce, keep)
        key = f"ticket:{ticket.nonce}"
        try:
            return await broadcaster.call_backend(lambda: claims.claim_once(key, keep))
        except BackendUnavailable:
            raise
        except Exception as exc:  # a backend's own errors: fail closed
            raise BackendUnavailable(
                f"livepanel: cannot check a ticket's nonce ({type(exc).__name__})"
            ) from None

    def _claims(self, backend: Backend) -> SingleUseClaims | None:
        """The backend's claims, when they make a ticket single-use across every worker."""
        claims = single_use_claims_of(backend)
        if self.workers > 1 and (claims is None or not claims.claims_shared):
            kind = type(backend).__name__
            held = "no single-use claims" if claims is None else "single-use claims in one process"
            raise ConfigurationError(
                f"Tickets: {self.workers} workers ({self._workers_from}), but {kind} keeps "
                f"{held}, so a ticket could be accepted once by each worker; use a backend "
                "that shares claims between processes (Broadcaster('redis://...')), or run "
                "one worker (workers=1)"
            )
        return claims

    def __repr__(self) -> str:
        return f"Tickets(ttl={self.ttl:g})"


def _secret_key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"Tickets: the secret must be at least {MIN_SECRET_BYTES} bytes; "
            'make one with python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return key


def _worker_count(workers: int | None) -> tuple[int, str]:
    """How many workers redeem tickets, and where that was learned (for messages)."""
    if workers is not None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigurationError("Tickets: workers must be an integer >= 1")
        return workers, f"workers={workers}"
    given = os.environ.get("WEB_CONCURRENCY", "").strip()
    if not given:
        return 1, "WEB_CONCURRENCY unset"
    try:
        count = int(given)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigurationError(
            f"Tickets: WEB_CONCURRENCY={given!r} is not a number of workers; "
            "set it to an integer >= 1, or pass workers="
        )
    return count, f"WEB_CONCURRENCY={count}"


def _query_values(scope: WWWScope, name: str) -> list[str]:
    raw = scope.get("query_string", b"") or b""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    return [value for key, value in parse_qsl(text, keep_blank_values=True) if key == name]


class TicketAuth:
    """The :class:`~livepanel.auth.Authenticator` of ``?ticket=<t>`` on the connect URL.

    It accepts a ticket :class:`Tickets` issued, once, before it expires and
    unless a revocation came after it, and returns a :class:`TicketPrincipal`;
    anything else (no ticket, two, a forged, tampered, expired, revoked or
    used one) is refused with 401. A refused ticket counts toward the
    endpoint's throttle; a handshake without one does not. A request a page
    can make without script (not a WebSocket handshake, not an event-stream
    ``GET``: the endpoint's HTTP probe, an ``<img>``) has its ticket checked
    but neither spent nor counted.

    The connect URL shows up in servers' access logs; unless
    ``redact_logs=False`` it installs :func:`redact_tickets` on uvicorn's and
    hypercorn's loggers, so what they log reads ``ticket=[redacted]``.

    Args:
        tickets: the :class:`Tickets` that issued them.
        redact_logs: install :func:`redact_tickets` now.

    Example::

        tickets = Tickets.from_env()
        app.mount("/ws", LivePanelApp(auth=TicketAuth(tickets)))
    """

    param = "ticket"

    def __init__(self, tickets: Tickets, *, redact_logs: bool = True) -> None:
        if not isinstance(tickets, Tickets):
            raise ConfigurationError("TicketAuth(tickets): tickets must be a Tickets instance")
        self.tickets = tickets
        if redact_logs:
            redact_tickets()

    def credentials_presented(self, scope: WWWScope) -> bool:
        """Whether the connect URL carries a ``ticket`` parameter (well-formed or not).

        Example::

            >>> auth = TicketAuth(Tickets("x" * 32), redact_logs=False)
            >>> auth.credentials_presented({"headers": [], "query_string": b"ticket=abc"})
            True
        """
        return bool(_query_values(scope, self.param))

    async def __call__(self, scope: WWWScope) -> TicketPrincipal | None:
        values = _query_values(scope, self.param)
        if len(values) != 1:
            return None
        if not made_by_script(scope):  # an <img>'s URL, say: checked, never spent
            checked = self.tickets.verify(values[0])
            if checked is None or self.tickets.revoked(checked):
                return None
            return TicketPrincipal(username=checked.user, audiences=checked.audiences)
        try:
            ticket = await self.tickets.redeem(values[0])
        except BackendUnavailable as exc:
            logger.warning("livepanel: refusing a ticket that cannot be checked now: %s", exc)
            return None
        except ConfigurationError as exc:  # our own words: no part of the request in them
            logger.error("livepanel: refusing every ticket: %s", exc)
            return None
        if ticket is None:
            return None
        return TicketPrincipal(username=ticket.user, audiences=ticket.audiences)

    def __repr__(self) -> str:
        return f"TicketAuth({self.tickets!r})"


# ---------------------------------------------------------------------- logs

_TICKET_IN_TEXT = re.compile(r"(?<![A-Za-z0-9_])(ticket=)[^&\s\"'#]*")
REDACTED_LOGGERS = ("uvicorn.error", "uvicorn.access", "hypercorn.access", "hypercorn.error")


def _redact(value: Any) -> Any:
    if isinstance(value, str) and "ticket=" in value:
        return _TICKET_IN_TEXT.sub(r"\1[redacted]", value)
    return value


class TicketRedactionFilter(logging.Filter):
    """Rewrites ``ticket=<t>`` in a log record's message and arguments to ``ticket=[redacted]``.

    uvicorn logs every WebSocket handshake's path with its query string; a
    ticket there is a credential until used (and one refused before
    authentication, say for its origin, stays valid until it expires).

    Example, in a ``uvicorn --log-config`` dictionary::

        "filters": {"tickets": {"()": "livepanel.tickets.TicketRedactionFilter"}},
        "loggers": {"uvicorn.error": {"filters": ["tickets"], ...}},
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact, and let the record through."""
        record.msg = _redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            # in place: hypercorn's access-log atoms are a dict subclass with lookups of its own
            for key, arg in list(record.args.items()):
                if isinstance(arg, str) and "ticket=" in arg:
                    record.args[key] = _redact(arg)
        return True


def redact_tickets(loggers: Iterable[str] = REDACTED_LOGGERS) -> TicketRedactionFilter:
    """Attach one :class:`TicketRedactionFilter` to each of ``loggers`` (once); return it.

    :class:`TicketAuth` calls it; call it yourself for other loggers that see
    URLs (a proxy's, your framework's access log).

    Example::

        redact_tickets(["uvicorn.error", "uvicorn.access", "myapp.access"])
    """
    installed: TicketRedactionFilter | None = None
    targets = [logging.getLogger(name) for name in loggers]
    for target in targets:
        for existing in target.filters:
            if isinstance(existing, TicketRedactionFilter):
                installed = existing
    if installed is None:
        installed = TicketRedactionFilter()
    for target in targets:
        if installed not in target.filters:
            target.addFilter(installed)
    return installed
