"""The ASGI endpoint: :class:`LivePanelApp`, and :class:`LivePanelMiddleware` to serve it at a path.

The endpoint is small glue over modules with one job each, in the order a
connection meets them:

- :mod:`livepanel.handshake`: the checks, in the contract's order (TLS,
  origin, authentication, authorization, limits), each admitting or denying;
- :mod:`livepanel.slots`: this app's connection slots, per-user counts and
  open connections, with the limits checked and a slot taken in one step;
- :mod:`livepanel.refusals`: how a denial is said (an HTTP response, or close
  1008 before accept), logged once per address and interval;
- :mod:`livepanel.transports`: the WebSocket and the event stream, siblings
  over one :class:`~livepanel.settings.EndpointSettings`, and the life of an
  accepted connection they share.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence
from typing import Any, cast

from asgiref.typing import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    Scope,
    WWWScope,
)

from livepanel.auth import Authenticator, BasicAuth
from livepanel.broadcaster import Broadcaster, get_broadcaster
from livepanel.errors import BackendUnavailable, ConfigurationError
from livepanel.handshake import (
    FORBIDDEN,
    SHUTTING_DOWN,
    UNAVAILABLE,
    UPGRADE_REQUIRED,
    Admission,
    Denial,
    admit,
    audiences_of,
)
from livepanel.mounting import Mounted
from livepanel.origin import OriginPolicy
from livepanel.protocol import CLOSE_SERVICE_RESTART
from livepanel.refusals import Refusals, cors_headers, denial_response, retry_reason
from livepanel.schema.asyncapi import asyncapi_document
from livepanel.settings import Audiences, Authorize, EndpointSettings
from livepanel.shutdown import SignalWatch
from livepanel.slots import ConnectionSlots, EndpointState, Slot
from livepanel.sse import is_fallback, wants_event_stream
from livepanel.throttle import AuthThrottle, client_address
from livepanel.tickets import TicketAuth
from livepanel.transports import (
    EventStreamTransport,
    Transport,
    WebSocketTransport,
    carry,
    close_reason,
)

__all__ = ["Audiences", "Authorize", "LivePanelApp", "LivePanelMiddleware", "endpoint_of"]

logger = logging.getLogger("livepanel")

_DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class LivePanelApp(Mounted[Broadcaster]):
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
        admission_rate: handshakes this app admits per second, after
            authentication (see :mod:`livepanel.admission`); the excess is
            answered 429 with ``Retry-After`` (or closed with 1013 and
            ``retry_after=<seconds>``), the hints spread so that a herd comes
            back at the rate. ``None`` (the default) admits without a rate.
        admission_burst: handshakes admitted back to back; a tenth of a
            second's worth of ``admission_rate`` by default.
        reconnect_window: seconds over which a shutdown spreads its clients'
            return: each connection is closed with 1012 and
            ``retry_after=<seconds>``, connection ``i`` of ``n`` told about
            ``(i + 0.5) / n * reconnect_window``.
        shutdown_signals: signals on which every connection is closed with
            1012 before the server's own handler runs (see
            :mod:`livepanel.shutdown`); ``()`` leaves signals alone.

    Raises:
        ConfigurationError: an ``auth`` that is not callable, a heartbeat,
            message size or admission rate that is not positive, a limit below
            1, an origin pattern it cannot read, or throttle settings out of range.

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
        admission_rate: float | None = None,
        admission_burst: int | None = None,
        reconnect_window: float = 5.0,
        shutdown_signals: Sequence[int] = _DEFAULT_SIGNALS,
    ) -> None:
        self.settings = EndpointSettings(
            auth=auth,
            origin_policy=OriginPolicy(allowed_origins),
            authorize=authorize,
            audiences=audiences,
            require_tls=require_tls,
            heartbeat_interval=float(heartbeat_interval),
            max_message_size=max_message_size,
            max_connections=max_connections,
            max_connections_per_user=max_connections_per_user,
            client_rate=client_rate,
            client_burst=client_burst,
            admission_rate=admission_rate,
            admission_burst=admission_burst,
            reconnect_window=float(reconnect_window),
        )
        """What this endpoint does with each handshake and connection, frozen."""
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
        self.shutdown_signals = tuple(shutdown_signals)
        self._signals = SignalWatch(self, self.shutdown_signals)
        self._slots = ConnectionSlots(self.settings)
        self._refusals = Refusals()
        self.handshakes: dict[int, int] = {}
        """Handshakes (WebSocket and event stream) answered, by status (101: accepted)."""
        self.sse_fallbacks = 0
        """Event streams accepted that came as a fallback from WebSocket (``?fallback=1``)."""

    @property
    def broadcaster(self) -> Broadcaster:
        """The broadcaster this endpoint serves (the default one unless given)."""
        return self._broadcaster if self._broadcaster is not None else get_broadcaster()

    @property
    def connection_count(self) -> int:
        """Connections this app holds now."""
        return self._slots.count

    @property
    def draining(self) -> bool:
        """Whether :meth:`shutdown` began: new handshakes are refused with 503."""
        return self._slots.state is EndpointState.SHUTTING_DOWN

    def asyncapi(
        self, url: str = "ws://localhost:8000/ws", *, title: str = "livepanel"
    ) -> dict[str, Any]:
        """This endpoint as an AsyncAPI 3.0 document (JSON-ready), to serve beside an OpenAPI:
        the registered event types, its heartbeat, and the security schemes of its ``auth``
        (``BasicAuth``: HTTP Basic; ``TicketAuth``: tickets; another authenticator: both, as
        the common cases; ``None``: none).

        Args:
            url: where clients reach the endpoint, ``ws://`` or ``wss://``.
            title: the document's ``info.title``.

        Raises:
            ValueError: ``url`` is not a WebSocket URL.
            UnsupportedAnnotation: a registered event type cannot be described.

        Example::

            @api.get("/asyncapi.json")
            def asyncapi() -> dict:
                return live.asyncapi("wss://panel.example.com/ws")
        """
        auth = self.settings.auth
        if auth is None:
            security: tuple[str, ...] = ()
        elif isinstance(auth, BasicAuth):
            security = ("basic",)
        elif isinstance(auth, TicketAuth):
            security = ("ticket",)
        else:
            security = ("basic", "ticket")
        return asyncapi_document(
            url=url,
            security=security,
            heartbeat_interval=self.settings.heartbeat_interval,
            title=title,
        )

    def cors_headers(self, scope: WWWScope) -> list[tuple[bytes, bytes]]:
        """CORS headers for an event stream requested by a page of an allowed origin, so that
        its ``fetch`` may read it (a WebSocket needs none); none for any other request."""
        return cors_headers(scope, self.settings.origin_policy)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "websocket":
            message = await receive()
            if message["type"] == "websocket.connect":
                request = cast(WWWScope, scope)
                await self._serve(
                    WebSocketTransport(request, receive, send, self.settings, self._refusals)
                )
        elif scope["type"] == "http":
            request = cast(WWWScope, scope)
            if wants_event_stream(request):
                await self._serve(
                    EventStreamTransport(request, receive, send, self.settings, self._refusals)
                )
            else:
                await self._probe(request, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # ------------------------------------------------------------------ connections

    async def _serve(self, transport: Transport) -> None:
        """A WebSocket handshake or an event stream request: the checks, then the transport."""
        scope = transport.scope
        began = time.monotonic()  # a revocation heard after this closes the connection
        verdict = await admit(scope, self.settings, self.auth_throttle)
        if isinstance(verdict, Admission):  # the one place the admission rate is consulted
            address = client_address(scope.get("client"))
            verdict = self._slots.admit(verdict, reserve=True, address=address)
        if isinstance(verdict, Denial):
            self._count_handshake(verdict.status)
            await transport.refuse(verdict)
            return
        admission = verdict
        slot = Slot(self._slots, admission.user)
        try:  # the slot is ours from here: every way out gives it back
            if admission.delay:
                await asyncio.sleep(admission.delay)  # the admission rate's next token
            denial = await self._unready()
            audiences: frozenset[str] | None = None
            if denial is None:
                try:
                    audiences = await audiences_of(admission.principal, scope, self.settings)
                except Exception as exc:  # the type only: its message may quote the request
                    logger.error("livepanel: audiences() raised %s; refusing", type(exc).__name__)
                    denial = FORBIDDEN
            self._count_handshake(101 if denial is None else denial.status)
            if denial is not None:
                await transport.refuse(denial)
                return
            if isinstance(transport, EventStreamTransport) and is_fallback(scope):
                self.sse_fallbacks += 1  # accepted only: a refused client cannot move it
                logger.info("livepanel: an event stream opened as a fallback from WebSocket")
            scope["livepanel.principal"] = admission.principal  # type: ignore[typeddict-unknown-key]
            await carry(
                transport,
                self.broadcaster,
                self.settings,
                self._slots,
                admission.user,
                audiences,
                slot,
                began,
            )
        except asyncio.CancelledError:
            # the server stops without a word: say so if we can, and when to come back
            await transport.abandon(retry_reason(self._slots.departing()))
            raise
        finally:
            slot.release()  # unless its connection's close gave it back already

    async def _unready(self) -> Denial | None:
        """Why an admitted handshake must still be refused: shutdown began, or the backend
        cannot start; ``None`` when the endpoint is ready for it."""
        if self._slots.state is EndpointState.SHUTTING_DOWN:
            return SHUTTING_DOWN
        if not self._signals.installed:
            self._signals.install()  # mounted without lifespan: the first handshake
        try:
            await self.broadcaster.start()
        except BackendUnavailable:
            return UNAVAILABLE
        return None

    def _count_handshake(self, status: int) -> None:
        """One handshake answered with ``status`` (101: accepted), for metrics."""
        self.handshakes[status] = self.handshakes.get(status, 0) + 1

    async def _probe(self, scope: WWWScope, send: Any) -> None:
        """A plain HTTP request: the same checks, then 426, so a browser learns why its
        WebSocket was refused."""
        verdict = await admit(scope, self.settings, self.auth_throttle)
        if isinstance(verdict, Admission):  # over the rate: 429 too, without taking a token
            address = client_address(scope.get("client"))
            verdict = self._slots.admit(verdict, reserve=False, address=address)
        if isinstance(verdict, Denial):
            await self._refusals.refuse_http(scope, send, verdict)
            return
        body, headers = denial_response(UPGRADE_REQUIRED)
        await send({"type": "http.response.start", "status": 426, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # ------------------------------------------------------------------ lifespan and shutdown

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
        self._slots.reopen()
        self.broadcaster.mark_draining(False)
        self._signals.install()

    async def shutdown(self, code: int = CLOSE_SERVICE_RESTART, timeout: float = 5.0) -> None:
        """Close every connection of this app with ``code`` and refuse new ones with 503.

        With 1012 (the default) each close says when to come back,
        ``retry_after=<seconds>``, the times spread over ``reconnect_window``.
        Returns once they are all closed, or after ``timeout`` seconds. New
        handshakes are refused until the next ``lifespan.startup``. livepanel
        calls it on ``SIGTERM``/``SIGINT`` (``shutdown_signals``) and on
        ``lifespan.shutdown``; call it yourself where a server stops otherwise
        (hypercorn's ``serve(..., shutdown_trigger=...)``).
        """
        self.broadcaster.mark_draining()
        closing = self._slots.shut(close_reason(code))
        if closing:
            logger.info("livepanel: closing %d connection(s) with %d", closing, code)
        if not await self._slots.wait_empty(timeout):
            logger.warning(
                "livepanel: %d connection(s) still open %g s after shutdown began",
                self._slots.count,
                timeout,
            )


class LivePanelMiddleware(Mounted[Broadcaster]):
    """Serves the livepanel endpoint at ``path`` and passes everything else on untouched.

    Args:
        app: the ASGI application to wrap.
        path: where the endpoint lives, matched with or without a trailing slash.
        endpoint: a :class:`LivePanelApp` made beforehand, to serve at ``path``
            (then pass no other argument of ``LivePanelApp``): the way to hand
            the same endpoint to :func:`livepanel.metrics.instrument` when a
            framework makes the middleware itself (``app.add_middleware``).
        **kwargs: the arguments of :class:`LivePanelApp` (``auth`` is required).

    Raises:
        ConfigurationError: neither ``auth`` nor ``endpoint``, both, or a
            ``path`` that does not start with ``/``.

    Example::

        app.add_middleware(LivePanelMiddleware, path="/ws", auth=BasicAuth.from_env())
        # Quart: app.asgi_app = LivePanelMiddleware(app.asgi_app, auth=...)
        # the endpoint for metrics, made first:
        endpoint = LivePanelApp(auth=BasicAuth.from_env())
        app.add_middleware(LivePanelMiddleware, path="/ws", endpoint=endpoint)
        instrument(endpoint.broadcaster, app=endpoint)
    """

    def __init__(
        self,
        app: ASGI3Application | Any,
        path: str = "/ws",
        *,
        endpoint: LivePanelApp | None = None,
        **kwargs: Any,
    ) -> None:
        if endpoint is not None and kwargs:
            raise ConfigurationError(
                "LivePanelMiddleware: pass endpoint=LivePanelApp(...) or the arguments of "
                f"LivePanelApp, not both (got endpoint and {', '.join(sorted(kwargs))})"
            )
        if endpoint is None and "auth" not in kwargs:
            raise ConfigurationError(
                "LivePanelMiddleware: pass auth=BasicAuth.from_env() (or another "
                "Authenticator), or auth=None to allow anonymous access; or "
                "endpoint=LivePanelApp(...) made beforehand"
            )
        if not path.startswith("/"):
            raise ConfigurationError(f"LivePanelMiddleware: path must start with '/', not {path!r}")
        self.app = app
        self.path = path.rstrip("/") or "/"
        self.endpoint: LivePanelApp = endpoint if endpoint is not None else LivePanelApp(**kwargs)
        """The :class:`LivePanelApp` served at ``path``: pass it, or this middleware, to
        :func:`livepanel.metrics.instrument`."""

    @property
    def broadcaster(self) -> Broadcaster:
        """The broadcaster the endpoint serves."""
        return self.endpoint.broadcaster

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


def endpoint_of(mounted: LivePanelApp | LivePanelMiddleware) -> LivePanelApp:
    """The :class:`LivePanelApp` behind what was mounted: the app itself, or the middleware's.

    Raises:
        TypeError: ``mounted`` is neither.

    Example::

        endpoint_of(LivePanelMiddleware(app, auth=None)).handshakes  # {} so far
    """
    if isinstance(mounted, LivePanelMiddleware):
        return mounted.endpoint
    if isinstance(mounted, LivePanelApp):
        return mounted
    raise TypeError(
        "expected a LivePanelApp or a LivePanelMiddleware (what serves the endpoint), "
        f"not {type(mounted).__name__}"
    )
