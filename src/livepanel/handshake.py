"""The handshake checks, in the contract's order: each admits or denies, nothing else.

SPEC section 2 orders them: TLS, origin, authentication, authorization,
limits; the first failure answers and nothing after it runs. Each check is a
small function of the request's scope and the endpoint's
:class:`~livepanel.settings.EndpointSettings` returning a :class:`Denial`, or
what the handshake has established so far (an :class:`Admission`: who
connects). :func:`admit` runs the first four; the limits are checked by the
app's :class:`~livepanel.slots.ConnectionSlots`, which reserves the slot in the
same step (:func:`check_limits` is the rule it applies). How a denial is said
on the wire is :mod:`livepanel.refusals`' job.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any, cast

from asgiref.typing import WWWScope

from livepanel.auth import (
    Authenticator,
    credentials_presented,
    made_by_script,
    parse_basic_authorization,
)
from livepanel.settings import EndpointSettings
from livepanel.throttle import AuthThrottle, client_address

__all__ = [
    "FORBIDDEN",
    "SHUTTING_DOWN",
    "UNAVAILABLE",
    "UPGRADE_REQUIRED",
    "Admission",
    "Denial",
    "admit",
    "audiences_of",
    "authenticate",
    "check_authorized",
    "check_limits",
    "check_origin",
    "check_tls",
    "client_label",
    "header",
    "over_rate",
    "single_header",
    "user_of",
]

logger = logging.getLogger("livepanel")


@dataclass(frozen=True)
class Denial:
    """A refused handshake: the HTTP status, the JSON body's ``error`` code and message.

    ``headers`` go with the response (``WWW-Authenticate``, ``Retry-After``);
    ``logged=False`` keeps it out of the refusal log. ``retry_after`` (seconds)
    is the precise hint of a refusal over the admission rate: where the server
    cannot answer a WebSocket handshake over HTTP, it is said in the close
    reason (1013, ``retry_after=<seconds>``).

    Example::

        Denial(403, "forbidden", "this user may not connect")
    """

    status: int
    code: str
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    logged: bool = True
    retry_after: float | None = None


@dataclass(frozen=True)
class Admission:
    """A handshake that passed the checks so far: its principal and the user it counts as.

    ``principal`` is what the authenticator returned (``None`` with
    ``auth=None``); ``user`` is the name the limits and presence count the
    connection under (see :func:`user_of`), ``""`` for an anonymous one;
    ``delay`` is how long the admission rate holds it before it is accepted.

    Example::

        Admission(principal="admin", user="admin")
    """

    principal: Any
    user: str
    delay: float = 0.0


FORBIDDEN = Denial(403, "forbidden", "this user may not connect")
"""403: ``authorize()`` said no, or ``audiences()`` failed."""

UNAVAILABLE = Denial(503, "unavailable", "the event backend is unavailable; retry shortly")
"""503: the broadcaster's backend could not start."""

SHUTTING_DOWN = Denial(
    503,
    "shutting_down",
    "the server is shutting down; reconnect, with since, to resume",
    ((b"retry-after", b"1"),),
)
"""503 with ``Retry-After``: ``LivePanelApp.shutdown()`` began."""

UPGRADE_REQUIRED = Denial(
    426,
    "upgrade_required",
    "this is a WebSocket endpoint; connect with a WebSocket client",
    ((b"upgrade", b"websocket"), (b"connection", b"Upgrade")),
)
"""426: a plain HTTP request that passed every check (the answer to a browser's probe)."""

_TLS_REQUIRED = Denial(403, "tls_required", "connect over wss:// (TLS is required)")
_CROSS_SITE = Denial(
    403, "origin_not_allowed", "a cross-site request that is not a WebSocket handshake"
)
_ORIGIN_NOT_ALLOWED = Denial(403, "origin_not_allowed", "this origin may not connect")
_HTTPS_PAGE_REQUIRED = Denial(403, "origin_not_allowed", "connect from an https:// page")
_SERVER_FULL = Denial(429, "too_many_connections", "the server is full; retry later")
_USER_FULL = Denial(429, "too_many_connections", "this user has too many connections")


# ---------------------------------------------------------------------- reading the request


def header(scope: WWWScope, name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase), decoded as latin-1.

    Example::

        >>> header({"headers": [(b"Host", b"panel.test")]}, b"host")
        'panel.test'
    """
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def single_header(scope: WWWScope, name: bytes) -> tuple[str | None, bool]:
    """The header's value, and whether it appeared at most once.

    Example::

        >>> single_header({"headers": [(b"origin", b"a"), (b"origin", b"b")]}, b"origin")
        ('a', False)
    """
    values = [v for k, v in scope["headers"] if k.lower() == name]
    return (values[0].decode("latin-1") if values else None), len(values) <= 1


def client_label(scope: WWWScope) -> str:
    """The client's address for a log line: printable, short, whatever the server reported.

    Example::

        >>> client_label({"client": ("192.0.2.7", 50312)})
        '192.0.2.7:50312'
    """
    client = scope.get("client")
    text = f"{client[0]}:{client[1]}" if client else "unknown"
    if len(text) > 80 or not text.isprintable():
        text = text[:80].encode("unicode_escape", "backslashreplace").decode("ascii")
    return text


def user_of(principal: Any, scope: WWWScope) -> str:
    """The user a connection counts as: the principal's ``username``, else ``str(principal)``,
    else the Basic user name, else ``""``.

    Example::

        >>> user_of("alice", {"headers": []})
        'alice'
        >>> user_of(True, {"headers": [(b"authorization", b"Basic Ym9iOnB3")]})
        'bob'
    """
    name = getattr(principal, "username", None)
    if isinstance(name, str):
        return name
    if principal is not None and principal is not True:
        return str(principal)
    credentials = parse_basic_authorization(header(scope, b"authorization"))
    return credentials[0] if credentials else ""


# ---------------------------------------------------------------------- the checks, in order


def check_tls(scope: WWWScope, settings: EndpointSettings) -> Denial | None:
    """1. ``require_tls``: the scheme the server reports must be ``wss`` (``https``).

    Example::

        >>> from livepanel.origin import OriginPolicy
        >>> strict = EndpointSettings(auth=None, origin_policy=OriginPolicy(None), require_tls=True)
        >>> check_tls({"scheme": "ws", "headers": []}, strict).status
        403
    """
    if settings.require_tls and scope.get("scheme") not in ("wss", "https"):
        return _TLS_REQUIRED
    return None


def check_origin(scope: WWWScope, settings: EndpointSettings) -> Denial | None:
    """2. The origin: a browser's cross-site request only as a WebSocket or a CORS fetch,
    one ``Origin`` and one ``Host`` that the policy allows, and an https page under
    ``require_tls``.

    Example::

        >>> from livepanel.origin import OriginPolicy
        >>> same = EndpointSettings(auth=None, origin_policy=OriginPolicy(None))
        >>> scope = {"headers": [(b"host", b"panel.test"), (b"origin", b"https://evil.test")]}
        >>> check_origin(scope, same).code
        'origin_not_allowed'
    """
    if header(scope, b"sec-fetch-site") == "cross-site" and (
        header(scope, b"sec-fetch-mode") not in ("websocket", "cors")
    ):
        # a no-cors fetch from any page carries no Origin: refuse it before the throttle
        # (a WebSocket or a CORS fetch of the event stream carries one: the origin decides)
        return _CROSS_SITE
    origin, one_origin = single_header(scope, b"origin")
    host, one_host = single_header(scope, b"host")
    policy = settings.origin_policy
    if not (one_origin and one_host) or not policy.allows(origin, host):
        return _ORIGIN_NOT_ALLOWED
    if (
        settings.require_tls
        and origin is not None
        and origin != "null"
        and policy.same_origin
        and not origin.lower().startswith("https://")
    ):
        return _HTTPS_PAGE_REQUIRED
    return None


async def authenticate(
    scope: WWWScope, settings: EndpointSettings, throttle: AuthThrottle | None
) -> Admission | Denial:
    """3. Authentication: ``auth(scope)`` must return a principal (401 otherwise), after the
    failed-authentication ``throttle`` let the client's address in (429 otherwise).

    Example::

        admitted = await authenticate(scope, settings, app.auth_throttle)
        if isinstance(admitted, Denial):
            ...  # 401 with the authenticator's challenge, or 429 for a locked-out address
    """
    auth = settings.auth
    if auth is None:
        return Admission(None, user_of(None, scope))
    address, claimed_user, counted = "", None, False
    if throttle is not None:
        # a locked-out address learns nothing: its credentials are not even read
        address = client_address(scope.get("client"))
        # a URL any page can load without script (<img src=...?ticket=x>) is nobody's guess
        counted = credentials_presented(auth, scope if made_by_script(scope) else _no_query(scope))
        claimed = parse_basic_authorization(header(scope, b"authorization"))
        claimed_user = claimed[0] if claimed else None
        # only presented credentials count: a request without any is not a guess
        wait = throttle.attempt(address, claimed_user) if counted else throttle.retry_after(address)
        if wait is not None:
            return _locked_out(wait)
    principal: Any = None
    answered = False  # a cancelled check counts as no guess
    try:
        principal = await auth(scope)
        answered = True
    except Exception as exc:
        # the type only: a message or traceback may carry what the client sent
        logger.error(
            "livepanel: the authenticator raised %s; refusing %s with 401",
            type(exc).__name__,
            client_label(scope),
        )
        principal = None
        answered = True
    finally:
        if throttle is not None and counted:
            refused = answered and not principal
            if throttle.finished(address, claimed_user, refused=refused):
                logger.warning(
                    "livepanel: %s refused with 429 for %g s after %d failed "
                    "authentications within %g s",
                    client_label(scope),
                    throttle.lockout,
                    throttle.limit,
                    throttle.window,
                )
    if not principal:
        return _unauthorized(auth)
    return Admission(principal, user_of(principal, scope))


async def check_authorized(
    admission: Admission, scope: WWWScope, settings: EndpointSettings
) -> Admission | Denial:
    """4. Authorization: ``authorize(principal, scope)``, sync or async, false is a 403.

    Example::

        admitted = await check_authorized(Admission("viewer", "viewer"), scope, settings)
    """
    if settings.authorize is None:
        return admission
    allowed = settings.authorize(admission.principal, scope)
    if inspect.isawaitable(allowed):
        allowed = await allowed
    return admission if allowed else FORBIDDEN


def check_limits(
    admission: Admission, settings: EndpointSettings, *, held: int, held_by_user: int
) -> Admission | Denial:
    """5. Limits: ``max_connections`` and ``max_connections_per_user``, given the connections
    the app (``held``) and this user (``held_by_user``) hold now; a 429 when one is reached.

    Example::

        >>> from livepanel.origin import OriginPolicy
        >>> one = EndpointSettings(auth=None, origin_policy=OriginPolicy(None), max_connections=1)
        >>> check_limits(Admission(None, ""), one, held=1, held_by_user=0).status
        429
    """
    if settings.max_connections is not None and held >= settings.max_connections:
        return _SERVER_FULL
    limit = settings.max_connections_per_user
    if limit is not None and held_by_user >= limit:
        return _USER_FULL
    return admission


async def admit(
    scope: WWWScope, settings: EndpointSettings, throttle: AuthThrottle | None
) -> Admission | Denial:
    """Checks 1 to 4 in order; the first denial is the answer. The limits come after, from
    the app's connection slots, which reserve a slot in the same step.

    Example::

        verdict = await admit(scope, app.settings, app.auth_throttle)
        if isinstance(verdict, Admission):
            verdict = slots.admit(verdict, reserve=True)
    """
    denial = check_tls(scope, settings) or check_origin(scope, settings)
    if denial is not None:
        return denial
    admitted = await authenticate(scope, settings, throttle)
    if isinstance(admitted, Denial):
        return admitted
    return await check_authorized(admitted, scope, settings)


async def audiences_of(
    principal: Any, scope: WWWScope, settings: EndpointSettings
) -> frozenset[str] | None:
    """The connection's audiences: from ``audiences()``, else the principal's own
    (a ticket's), else ``None`` (every event).

    Example::

        audiences = await audiences_of(admission.principal, scope, settings)
    """
    if settings.audiences is None:
        value = getattr(principal, "audiences", None)
    else:
        value = settings.audiences(principal, scope)
        if inspect.isawaitable(value):
            value = await value
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset({value})
    return frozenset(str(item) for item in value)


def over_rate(wait: float) -> Denial:
    """429 ``over_rate``: the worker admits handshakes at its ``admission_rate``; come back in
    ``wait`` seconds (``Retry-After`` rounds it up to whole seconds, at least 1).

    Example::

        >>> over_rate(2.35).headers
        ((b'retry-after', b'3'),)
    """
    seconds = max(1, math.ceil(wait))
    return Denial(
        429,
        "over_rate",
        f"this worker admits connections at a steady rate; retry in {seconds} s",
        ((b"retry-after", str(seconds).encode()),),
        logged=False,  # a herd after a deploy is expected: counted, not logged per address
        retry_after=wait,
    )


def _no_query(scope: WWWScope) -> WWWScope:
    """The request without its query string: only what a page cannot set without script."""
    return cast(WWWScope, {**scope, "query_string": b""})


def _unauthorized(auth: Authenticator) -> Denial:
    headers: tuple[tuple[bytes, bytes], ...] = ()
    challenge = getattr(auth, "challenge", None)  # BasicAuth's, AnyOf's: optional
    if isinstance(challenge, str):
        headers = ((b"www-authenticate", challenge.encode("latin-1")),)
    return Denial(401, "unauthorized", "authentication required", headers)


def _locked_out(wait: float) -> Denial:
    seconds = max(1, math.ceil(wait))
    return Denial(
        429,
        "too_many_failures",
        f"too many failed authentications from this address; retry in {seconds} s",
        ((b"retry-after", str(seconds).encode()),),
        logged=False,  # one warning when the lockout begins, not a line per attempt
    )
