"""The ASGI endpoint: the handshake, then the connection handed over to its writer.

The checks run in the order of the contract (TLS, origin, authentication,
authorization, limits); the first failure answers and nothing else runs, and
a connection's slot is reserved in the same step as the limit check. After
``websocket.accept`` this module is thin glue: client frames go through
:class:`livepanel.protocol.ClientProtocol`, and the
:class:`~livepanel.connection.Connection`'s writer runs in a task of the
connection's own, started from its ASGI task and so in its context: every
``send`` happens there, and a broadcast never awaits a socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import math
import secrets
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode

from asgiref.typing import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    Scope,
    WWWScope,
)

from livepanel.auth import Authenticator, credentials_presented, parse_basic_authorization
from livepanel.broadcaster import Broadcaster, get_broadcaster
from livepanel.connection import CloseReason, Connection
from livepanel.errors import BackendUnavailable, ConfigurationError
from livepanel.logging_filters import mark_handshake_refused
from livepanel.origin import OriginPolicy
from livepanel.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    Ack,
    ClientProtocol,
    Close,
    ConnectOptions,
    Reply,
    Subscribe,
    error_frame,
    parse_connect_query,
    welcome_frame,
)
from livepanel.shutdown import SignalWatch
from livepanel.sse import SSE_HEADERS, sse_chunk, wants_event_stream
from livepanel.throttle import AuthThrottle, RefusalLog, client_address

__all__ = ["Audiences", "Authorize", "LivePanelApp", "LivePanelMiddleware"]

logger = logging.getLogger("livepanel")

Authorize = Callable[[Any, WWWScope], "bool | Awaitable[bool]"]
"""``authorize(principal, scope)``, sync or async: false refuses the handshake with 403.

Example::

    def admins_only(principal, scope):
        return getattr(principal, "is_admin", False)

    LivePanelApp(auth=BasicAuth(verify), authorize=admins_only)
"""

Audiences = Callable[[Any, WWWScope], Any]
"""``audiences(principal, scope)``, sync or async: a connection's audience strings, or ``None``.

Example::

    def teams(principal, scope):
        return {f"team:{t}" for t in principal.teams} | {f"user:{principal.username}"}

    LivePanelApp(auth=BasicAuth(verify), audiences=teams)
"""

_HTTP_EXTENSION = "websocket.http.response"
# how each way a connection ends is said on the wire (CLIENT_LEFT: nothing to say)
_CLOSE_CODES = {
    CloseReason.GOING_AWAY: CLOSE_GOING_AWAY,
    CloseReason.POLICY_VIOLATION: CLOSE_POLICY_VIOLATION,
    CloseReason.MESSAGE_TOO_BIG: CLOSE_MESSAGE_TOO_BIG,
    CloseReason.INTERNAL_ERROR: CLOSE_INTERNAL_ERROR,
    CloseReason.SLOW_CONSUMER: CLOSE_TRY_AGAIN_LATER,
}
_CLOSE_REASONS = {code: reason for reason, code in _CLOSE_CODES.items()}
_ONE_REPLAY = "one replay at a time: read the last one before asking for another"


@dataclass(frozen=True)
class _Denial:
    status: int
    code: str
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    logged: bool = True


_UNAVAILABLE = _Denial(503, "unavailable", "the event backend is unavailable; retry shortly")
_SHUTTING_DOWN = _Denial(
    503,
    "shutting_down",
    "the server is shutting down; reconnect, with since, to resume",
    ((b"retry-after", b"1"),),
)
_CROSS_SITE = _Denial(
    403, "origin_not_allowed", "a cross-site request that is not a WebSocket handshake"
)
_DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _locked_out(wait: float) -> _Denial:
    seconds = max(1, math.ceil(wait))
    return _Denial(
        429,
        "too_many_failures",
        f"too many failed authentications from this address; retry in {seconds} s",
        ((b"retry-after", str(seconds).encode()),),
        logged=False,  # one warning when the lockout begins, not a line per attempt
    )


def _header(scope: WWWScope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _single_header(scope: WWWScope, name: bytes) -> tuple[str | None, bool]:
    """The header's value, and whether it appeared at most once."""
    values = [v for k, v in scope["headers"] if k.lower() == name]
    return (values[0].decode("latin-1") if values else None), len(values) <= 1


def _client(scope: WWWScope) -> str:
    """The client's address for a log line: printable, short, whatever the server reported."""
    client = scope.get("client")
    text = f"{client[0]}:{client[1]}" if client else "unknown"
    if len(text) > 80 or not text.isprintable():
        text = text[:80].encode("unicode_escape", "backslashreplace").decode("ascii")
    return text


class LivePanelApp:
    """The ASGI 3 application serving the livepanel WebSocket endpoint.

    Args:
        broadcaster: where events come from; the default broadcaster when ``None``.
        auth: an :class:`~livepanel.auth.Authenticator` such as
            :class:`~livepanel.auth.BasicAuth`, or ``None`` to allow anonymous
            access explicitly (logged as a warning). Required.
        allowed_origins: ``None`` for same-origin, or a list of origins and
            patterns (see :class:`~livepanel.origin.OriginPolicy`).
        authorize: ``authorize(principal, scope)``, sync or async; false refuses with 403.
        audiences: ``audiences(principal, scope)``, sync or async, run once at connect:
            the audience strings of the connection (it receives the events whose
            audience shares one of them, and those without one), or ``None`` to
            see everything. Without it, a principal's ``audiences`` attribute is
            used (a ticket's, see :class:`~livepanel.tickets.TicketAuth`), else ``None``.
        require_tls: refuse (403) unless the server reports ``wss``/``https``.
        heartbeat_interval: seconds of silence before the server sends ``ping``.
        max_message_size: client frames above this many bytes close with 1009.
        max_connections: connections this app holds at most (429 beyond).
        max_connections_per_user: connections one user holds at most (429 beyond).
        client_rate: client messages per second per connection (token bucket).
        client_burst: the bucket's size.
        auth_failure_limit: refused credentials from one client address
            (``scope["client"]``) within ``auth_failure_window`` seconds that
            lock the address out: it is answered 429 with ``Retry-After`` for
            ``auth_lockout`` seconds, before its credentials are read. Only
            credentials presented and refused count (see
            :func:`~livepanel.auth.credentials_presented`), and guesses still
            being checked count too. ``None`` turns the throttle off; set
            ``app.auth_throttle`` to an :class:`~livepanel.throttle.AuthThrottle`
            of your own for the per-user-name budget or the memory bound.
        auth_failure_window: seconds over which refusals add up.
        auth_lockout: seconds a locked-out address waits.
        shutdown_signals: signals on which every connection is closed with
            1001 before the server's own handler runs (see
            :mod:`livepanel.shutdown`); ``()`` leaves signals alone.

    Example::

        app.mount("/ws", LivePanelApp(auth=BasicAuth.from_env()))
    """

    def __init__(
        self,
        broadcaster: Broadcaster | None = None,
        *,
        auth: Authenticator | None,
        allowed_origins: Sequence[str] | None = None,
        authorize: Authorize | None = None,
        audiences: Audiences | None = None,
        require_tls: bool = False,
        heartbeat_interval: float = 25.0,
        max_message_size: int = 65536,
        max_connections: int | None = None,
        max_connections_per_user: int | None = None,
        client_rate: float | None = 20.0,
        client_burst: int = 40,
        auth_failure_limit: int | None = 20,
        auth_failure_window: float = 60.0,
        auth_lockout: float = 60.0,
        shutdown_signals: Sequence[int] = _DEFAULT_SIGNALS,
    ) -> None:
        if auth is not None and not callable(auth):
            raise ConfigurationError(
                "LivePanelApp: auth must be an Authenticator such as BasicAuth.from_env(), "
                "or None to allow anonymous access"
            )
        if heartbeat_interval <= 0:
            raise ConfigurationError("LivePanelApp: heartbeat_interval must be > 0 seconds")
        if max_message_size < 1:
            raise ConfigurationError("LivePanelApp: max_message_size must be >= 1 byte")
        for name, limit in (
            ("max_connections", max_connections),
            ("max_connections_per_user", max_connections_per_user),
        ):
            if limit is not None and limit < 1:
                raise ConfigurationError(f"LivePanelApp: {name} must be >= 1 or None")
        self.auth_throttle: AuthThrottle | None = None
        if auth_failure_limit is not None:
            try:
                self.auth_throttle = AuthThrottle(
                    auth_failure_limit, auth_failure_window, auth_lockout
                )
            except ConfigurationError as exc:
                raise ConfigurationError(
                    "LivePanelApp: auth_failure_limit must be >= 1 (or None to turn the "
                    "throttle off), auth_failure_window and auth_lockout > 0 seconds"
                ) from exc
        if auth is None:
            logger.warning("livepanel: auth=None, the endpoint accepts anonymous connections")
        self._broadcaster = broadcaster
        self.auth = auth
        self.origin_policy = OriginPolicy(allowed_origins)
        self.authorize = authorize
        self.audiences = audiences
        self.require_tls = require_tls
        self.heartbeat_interval = float(heartbeat_interval)
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.max_connections_per_user = max_connections_per_user
        self.client_rate = client_rate
        self.client_burst = client_burst
        self.shutdown_signals = tuple(shutdown_signals)
        self._signals = SignalWatch(self, self.shutdown_signals)
        self.refusal_log = RefusalLog()
        self._connections = 0
        self._per_user: dict[str, int] = {}
        self._live: set[Connection] = set()  # this app's open connections, for shutdown()
        self._draining = False
        self._idle: asyncio.Event | None = None
        self.handshakes: dict[int, int] = {}  # WebSocket handshakes by status, 101: accepted

    @property
    def broadcaster(self) -> Broadcaster:
        """The broadcaster this endpoint serves (the default one unless given)."""
        return self._broadcaster if self._broadcaster is not None else get_broadcaster()

    @property
    def connection_count(self) -> int:
        """Connections this app holds now."""
        return self._connections

    @property
    def draining(self) -> bool:
        """Whether :meth:`shutdown` began: new handshakes are refused with 503."""
        return self._draining

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "websocket":
            message = await receive()
            if message["type"] == "websocket.connect":
                await self._serve(cast(WWWScope, scope), receive, send, _Endpoint)
        elif scope["type"] == "http":
            if wants_event_stream(cast(WWWScope, scope)):
                await self._serve(cast(WWWScope, scope), receive, send, _EventStream)
            else:
                await self._http(cast(WWWScope, scope), receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # ------------------------------------------------------------------ checks

    async def _check(
        self, scope: WWWScope, *, reserve: bool = False
    ) -> tuple[_Denial | None, Any, str]:
        """Run the handshake checks in order; return (denial, principal, user).

        With ``reserve``, a handshake that passes holds its connection slot on
        return: the limit check and the reservation run with no await between
        them, so no number of racing handshakes gets past a limit.
        """
        if self.require_tls and scope.get("scheme") not in ("wss", "https"):
            return _Denial(403, "tls_required", "connect over wss:// (TLS is required)"), None, ""
        if _header(scope, b"sec-fetch-site") == "cross-site" and (
            _header(scope, b"sec-fetch-mode") not in ("websocket", "cors")
        ):
            # a no-cors fetch from any page carries no Origin: refuse it before the throttle
            # (a WebSocket or a CORS fetch of the event stream carries one: the origin decides)
            return _CROSS_SITE, None, ""
        origin, one_origin = _single_header(scope, b"origin")
        host, one_host = _single_header(scope, b"host")
        if not (one_origin and one_host) or not self.origin_policy.allows(origin, host):
            return _Denial(403, "origin_not_allowed", "this origin may not connect"), None, ""
        if (
            self.require_tls
            and origin is not None
            and origin != "null"
            and self.origin_policy.same_origin
            and not origin.lower().startswith("https://")
        ):
            return _Denial(403, "origin_not_allowed", "connect from an https:// page"), None, ""
        principal: Any = None
        if self.auth is not None:
            throttle, address, claimed_user, counted = self.auth_throttle, "", None, False
            if throttle is not None:
                # a locked-out address learns nothing: its credentials are not even read
                address = client_address(scope.get("client"))
                counted = credentials_presented(self.auth, scope)
                claimed = parse_basic_authorization(_header(scope, b"authorization"))
                claimed_user = claimed[0] if claimed else None
                # only presented credentials count: a request without any is not a guess
                wait = (
                    throttle.attempt(address, claimed_user)
                    if counted
                    else throttle.retry_after(address)
                )
                if wait is not None:
                    return _locked_out(wait), None, ""
            answered = False  # a cancelled check counts as no guess
            try:
                principal = await self.auth(scope)
                answered = True
            except Exception as exc:
                # the type only: a message or traceback may carry what the client sent
                logger.error(
                    "livepanel: the authenticator raised %s; refusing %s with 401",
                    type(exc).__name__,
                    _client(scope),
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
                            _client(scope),
                            throttle.lockout,
                            throttle.limit,
                            throttle.window,
                        )
            if not principal:
                headers: tuple[tuple[bytes, bytes], ...] = ()
                challenge = getattr(self.auth, "challenge", None)
                if isinstance(challenge, str):
                    headers = ((b"www-authenticate", challenge.encode("latin-1")),)
                return _Denial(401, "unauthorized", "authentication required", headers), None, ""
        if self.authorize is not None:
            allowed = self.authorize(principal, scope)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                return _Denial(403, "forbidden", "this user may not connect"), principal, ""
        user = self._user_of(principal, scope)
        if self.max_connections is not None and self._connections >= self.max_connections:
            return _Denial(429, "too_many_connections", "the server is full; retry later"), None, ""
        if (
            self.max_connections_per_user is not None
            and self._per_user.get(user, 0) >= self.max_connections_per_user
        ):
            return (
                _Denial(429, "too_many_connections", "this user has too many connections"),
                None,
                "",
            )
        if reserve:
            self._connections += 1
            self._per_user[user] = self._per_user.get(user, 0) + 1
        return None, principal, user

    async def _audiences_of(self, principal: Any, scope: WWWScope) -> frozenset[str] | None:
        """The connection's audiences: from ``audiences()``, else the principal's own."""
        if self.audiences is None:
            value = getattr(principal, "audiences", None)
        else:
            value = self.audiences(principal, scope)
            if inspect.isawaitable(value):
                value = await value
        if value is None:
            return None
        if isinstance(value, str):
            return frozenset({value})
        return frozenset(str(item) for item in value)

    def _count_handshake(self, status: int) -> None:
        """One WebSocket handshake answered with ``status`` (101: accepted), for metrics."""
        self.handshakes[status] = self.handshakes.get(status, 0) + 1

    def _release(self, user: str) -> None:
        """Give back the slot :meth:`_check` reserved."""
        self._connections -= 1
        left = self._per_user[user] - 1
        if left:
            self._per_user[user] = left
        else:
            del self._per_user[user]
        if not self._connections and self._idle is not None:
            self._idle.set()
            self._idle = None

    @staticmethod
    def _user_of(principal: Any, scope: WWWScope) -> str:
        name = getattr(principal, "username", None)
        if isinstance(name, str):
            return name
        if principal is not None and principal is not True:
            return str(principal)
        credentials = parse_basic_authorization(_header(scope, b"authorization"))
        return credentials[0] if credentials else ""

    # ------------------------------------------------------------------ plain HTTP

    async def _http(self, scope: WWWScope, receive: ASGIReceiveCallable, send: Any) -> None:
        denial, _, _ = await self._check(scope)
        if denial is None:
            denial = _Denial(
                426,
                "upgrade_required",
                "this is a WebSocket endpoint; connect with a WebSocket client",
                ((b"upgrade", b"websocket"), (b"connection", b"Upgrade")),
            )
            body, headers = self._denial_body(denial)
            await send({"type": "http.response.start", "status": 426, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await self._answer(scope, send, denial)

    async def _answer_stream(self, scope: WWWScope, send: Any, denial: _Denial) -> None:
        """Refuse an event stream; a page of an allowed origin may read why (CORS)."""
        await self._answer(scope, send, denial, self.cors_headers(scope))

    def cors_headers(self, scope: WWWScope) -> list[tuple[bytes, bytes]]:
        """CORS headers for an event stream requested by a page of an allowed origin, so that
        its ``fetch`` may read it (a WebSocket needs none); none for any other request."""
        origin, single = _single_header(scope, b"origin")
        host, _ = _single_header(scope, b"host")
        if not origin or not single or not self.origin_policy.allows(origin, host):
            return []
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"origin"),
        ]

    async def _answer(
        self,
        scope: WWWScope,
        send: Any,
        denial: _Denial,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Refuse a plain HTTP request (a probe, or an SSE request) with the denial's status."""
        self._log_denial(scope, denial)
        body, headers = self._denial_body(denial)
        headers += extra or []
        await send({"type": "http.response.start", "status": denial.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    @staticmethod
    def _denial_body(denial: _Denial) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        body = json.dumps({"error": denial.code, "message": denial.message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *denial.headers,
        ]
        return body, headers

    def _log_denial(self, scope: WWWScope, denial: _Denial) -> None:
        if not denial.logged:
            return
        # one line per address and interval: a prober cannot fill the logs
        earlier = self.refusal_log.note(client_address(scope.get("client")))
        if earlier is None:
            return
        logger.info(
            "livepanel: refused %s with %d (%s)%s",
            _client(scope),
            denial.status,
            denial.code,
            f"; {earlier} more refusal(s) from this address not logged since the last line"
            if earlier
            else "",
        )

    async def _deny(self, scope: WWWScope, send: Any, denial: _Denial) -> None:
        self._log_denial(scope, denial)
        if _HTTP_EXTENSION in (scope.get("extensions") or {}):
            mark_handshake_refused()  # for quiet_refused_handshakes() (uvicorn's sansio)
            body, headers = self._denial_body(denial)
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": denial.status,
                    "headers": headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        else:
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION, "reason": ""})

    # ------------------------------------------------------------------ lifespan

    async def _lifespan(self, receive: ASGIReceiveCallable, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._starting_up()
                try:
                    await self.broadcaster.start()
                except BackendUnavailable as exc:  # readers retry on first use; do not fail startup
                    logger.warning("livepanel: backend unavailable at startup: %s", exc)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await self.broadcaster.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _starting_up(self) -> None:
        """A server starts this app: accept connections again, chain the signal handlers."""
        self._draining = False
        self.broadcaster.mark_draining(False)
        self._signals.install()

    async def shutdown(self, code: int = CLOSE_GOING_AWAY, timeout: float = 5.0) -> None:
        """Close every connection of this app with ``code`` and refuse new ones with 503.

        Returns once they are all closed, or after ``timeout`` seconds. New
        handshakes are refused until the next ``lifespan.startup``. livepanel
        calls it on ``SIGTERM``/``SIGINT`` (``shutdown_signals``) and on
        ``lifespan.shutdown``; call it yourself where a server stops otherwise
        (hypercorn's ``serve(..., shutdown_trigger=...)``).
        """
        self._draining = True
        self.broadcaster.mark_draining()
        live = list(self._live)
        if live:
            logger.info("livepanel: closing %d connection(s) with %d", len(live), code)
        reason = _CLOSE_REASONS.get(code, CloseReason.GOING_AWAY)
        for conn in live:
            conn.close(reason)
        if self._connections:
            if self._idle is None:  # shared by concurrent calls (a signal, then lifespan)
                self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except asyncio.TimeoutError:
                logger.warning(
                    "livepanel: %d connection(s) still open %g s after shutdown began",
                    self._connections,
                    timeout,
                )

    # ------------------------------------------------------------------ WebSocket

    async def _serve(
        self,
        scope: WWWScope,
        receive: ASGIReceiveCallable,
        send: Any,
        transport: type[_Endpoint],
    ) -> None:
        """A WebSocket handshake or an SSE request: the checks, then the client's endpoint."""
        deny = self._deny if transport is _Endpoint else self._answer_stream
        denial, principal, user = await self._check(scope, reserve=True)
        if denial is not None:
            self._count_handshake(denial.status)
            await deny(scope, send, denial)
            return
        try:  # the slot is ours from here: every way out gives it back
            if self._draining:
                denial = _SHUTTING_DOWN
            else:
                if not self._signals.installed:
                    self._signals.install()  # mounted without lifespan: the first handshake
                try:
                    await self.broadcaster.start()
                except BackendUnavailable:
                    denial = _UNAVAILABLE
            audiences: frozenset[str] | None = None
            if denial is None:
                try:
                    audiences = await self._audiences_of(principal, scope)
                except Exception as exc:  # the type only: its message may quote the request
                    logger.error("livepanel: audiences() raised %s; refusing", type(exc).__name__)
                    denial = _Denial(403, "forbidden", "this user may not connect")
            self._count_handshake(101 if denial is None else denial.status)
            if denial is not None:
                await deny(scope, send, denial)
                return
            scope["livepanel.principal"] = principal  # type: ignore[typeddict-unknown-key]
            await transport(self, scope, receive, send, user, self._live).run(audiences)
        except asyncio.CancelledError:
            # the server stops without a word (hypercorn after its graceful timeout): say so
            if transport is _Endpoint:
                await _say_going_away(send)
            raise
        finally:
            self._release(user)


class _Endpoint:
    """One accepted WebSocket: its :class:`Connection`'s writer and reader, two tasks of its own.

    Both start from the connection's ASGI task, which waits for the writer: they
    run in that task's context (what a host middleware set for this request),
    and each wake of the writer passes through two coroutine frames, not
    through the whole chain of the server's and the host's middleware.
    """

    transport = "websocket"

    def __init__(
        self,
        app: LivePanelApp,
        scope: WWWScope,
        receive: ASGIReceiveCallable,
        send: Any,
        user: str,
        live: set[Connection],
    ) -> None:
        self.app = app
        self.live = live  # the app's open connections, which shutdown() closes
        self.scope = scope
        self.receive = receive
        self.send = send
        self.user = user
        self.protocol = ClientProtocol(
            max_message_size=app.max_message_size,
            client_rate=app.client_rate,
            client_burst=app.client_burst,
        )
        self.id = secrets.token_urlsafe(9)

    async def run(self, audiences: frozenset[str] | None = None) -> None:
        app = self.app
        options = self._options()
        await self._accept()
        async with app.broadcaster.connection(
            batch=options.batch, user=self.user, audiences=audiences, transport=self.transport
        ) as conn:
            conn.push_control(welcome_frame(self.id, app.heartbeat_interval, conn.last_event_id))
            if options.error is not None:
                conn.push_control(error_frame("invalid_message", options.error))
            loop = asyncio.get_running_loop()
            reader = loop.create_task(self._read(conn))
            try:
                if options.subscribe is not None:
                    wanted = options.subscribe
                    await conn.subscribe(wanted.types, wanted.since, wanted.state)
                    self.protocol.charge(conn.outbox.replayed)
                # cancelling this task (the server stops) cancels the writer it awaits
                reason = await loop.create_task(self._write(conn))
                if reason is CloseReason.REVOKED:
                    code = conn.revoked_code
                else:
                    code = _CLOSE_CODES.get(reason)
                if code is not None:
                    await self._close(code)
            finally:
                reader.cancel()
                try:
                    await reader
                except (asyncio.CancelledError, OSError):
                    pass

    def _options(self) -> ConnectOptions:
        return parse_connect_query(self.scope.get("query_string", b""))

    async def _accept(self) -> None:
        await self.send({"type": "websocket.accept", "subprotocol": None, "headers": []})

    def _write(self, conn: Connection) -> Coroutine[Any, Any, CloseReason]:
        """The connection's writer, :meth:`Connection.write` with this transport's ``send``."""
        send = self.send

        def send_text(text: str) -> Awaitable[None]:
            return send({"type": "websocket.send", "text": text})  # type: ignore[no-any-return]

        return conn.write(send_text, self.app.heartbeat_interval)

    async def _close(self, code: int) -> None:
        if code == CLOSE_TRY_AGAIN_LATER:
            logger.info("livepanel: closed slow connection %s (1013)", self.id)
        try:
            await self.send({"type": "websocket.close", "code": code, "reason": ""})
        except Exception:  # the client is gone, or the server refuses: nothing left to say
            pass

    async def _read(self, conn: Connection) -> None:
        """Turn client frames into actions until the client disconnects."""
        self.live.add(conn)
        try:
            if self.app.draining:  # accepted just before shutdown() began
                conn.close(CloseReason.GOING_AWAY)
            await self._read_frames(conn)
        finally:
            self.live.discard(conn)

    async def _read_frames(self, conn: Connection) -> None:
        protocol = self.protocol
        while True:
            message = await self.receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                conn.close(CloseReason.CLIENT_LEFT)
                return
            if kind != "websocket.receive":
                continue
            text = message.get("text")
            if isinstance(text, str):
                actions = protocol.receive_text(text)
            else:
                actions = protocol.receive_bytes(cast(bytes, message.get("bytes") or b""))
            for action in actions:
                if isinstance(action, Reply):
                    conn.push_control(action.text)
                elif isinstance(action, Close):
                    conn.close(_CLOSE_REASONS.get(action.code, CloseReason.POLICY_VIOLATION))
                    return
                elif isinstance(action, Subscribe):
                    if (action.since is not None or action.state) and conn.replaying:
                        conn.push_control(error_frame("rate_limited", _ONE_REPLAY))
                        continue
                    replayed = conn.outbox.replayed
                    await conn.subscribe(action.types, action.since, action.state)
                    self.protocol.charge(conn.outbox.replayed - replayed)  # a replay is not free
                elif isinstance(action, Ack):
                    pass  # recorded by the protocol (protocol.last_ack)


class _EventStream(_Endpoint):
    """One Server-Sent Events stream: the same connection, frames as SSE messages."""

    transport = "sse"

    def _options(self) -> ConnectOptions:
        options = parse_connect_query(self.scope.get("query_string", b""))
        resume = _header(self.scope, b"last-event-id")  # the browser's reconnect, if any
        if resume:
            merged = dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))
            merged["since"] = resume.strip()
            options = parse_connect_query(urlencode(merged))
        return dataclasses.replace(options, batch=False)

    async def _accept(self) -> None:
        headers = [*SSE_HEADERS, *self.app.cors_headers(self.scope)]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    def _write(self, conn: Connection) -> Coroutine[Any, Any, CloseReason]:
        send = self.send

        def send_chunk(text: str) -> Awaitable[None]:
            chunk = {"type": "http.response.body", "body": text.encode(), "more_body": True}
            return send(chunk)  # type: ignore[no-any-return]

        return conn.write(send_chunk, self.app.heartbeat_interval, encode=sse_chunk)

    async def _close(self, code: int) -> None:
        """End the stream: the client reconnects with ``Last-Event-ID``."""
        if code == CLOSE_TRY_AGAIN_LATER:
            logger.info("livepanel: ended slow event stream %s", self.id)
        end = {"type": "http.response.body", "body": b"", "more_body": False}
        try:
            await asyncio.wait_for(self.send(end), 1.0)
        except (Exception, asyncio.TimeoutError):  # a stalled or vanished client
            pass

    async def _read_frames(self, conn: Connection) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                conn.close(CloseReason.CLIENT_LEFT)
                return


async def _say_going_away(send: Any) -> None:
    """Best effort: close with 1001 a connection whose task the server is cancelling."""
    try:
        await asyncio.wait_for(
            send({"type": "websocket.close", "code": CLOSE_GOING_AWAY, "reason": ""}), 1.0
        )
    except (Exception, asyncio.TimeoutError):  # closed already, or the client is gone
        pass


class LivePanelMiddleware:
    """Serves the livepanel endpoint at ``path`` and passes everything else on untouched.

    Args:
        app: the ASGI application to wrap.
        path: where the endpoint lives, matched with or without a trailing slash.
        **kwargs: the arguments of :class:`LivePanelApp` (``auth`` is required).

    Example::

        app.add_middleware(LivePanelMiddleware, path="/ws", auth=BasicAuth.from_env())
        # Quart: app.asgi_app = LivePanelMiddleware(app.asgi_app, auth=...)
    """

    def __init__(self, app: ASGI3Application | Any, path: str = "/ws", **kwargs: Any) -> None:
        if "auth" not in kwargs:
            raise ConfigurationError(
                "LivePanelMiddleware: pass auth=BasicAuth.from_env() (or another "
                "Authenticator), or auth=None to allow anonymous access"
            )
        if not path.startswith("/"):
            raise ConfigurationError(f"LivePanelMiddleware: path must start with '/', not {path!r}")
        self.app = app
        self.path = path.rstrip("/") or "/"
        self.endpoint = LivePanelApp(**kwargs)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        self.endpoint.broadcaster.start_soon()  # so the host app's publishes reach the backend
        if scope["type"] in ("http", "websocket"):
            path = scope["path"].rstrip("/") or "/"
            if path == self.path:
                await self.endpoint(scope, receive, send)
                return
        elif scope["type"] == "lifespan":
            receive = self._watching_lifespan(receive)
        await self.app(scope, receive, send)

    def _watching_lifespan(self, receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
        """``receive`` for the wrapped app's lifespan, with the endpoint told first."""
        endpoint = self.endpoint

        async def watched() -> Any:
            message = await receive()
            if message["type"] == "lifespan.startup":
                endpoint._starting_up()
            elif message["type"] == "lifespan.shutdown":
                await endpoint.shutdown()
            return message

        return cast(ASGIReceiveCallable, watched)
