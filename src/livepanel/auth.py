"""Authentication of WebSocket handshakes: HTTP Basic, the ``Authenticator`` protocol and ``AnyOf``.

An authenticator takes the ASGI scope of the handshake and returns a principal
(anything truthy that identifies the user) or ``None`` to refuse it with 401.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from asgiref.typing import WWWScope

from livepanel.errors import ConfigurationError

__all__ = [
    "AnyOf",
    "Authenticator",
    "BasicAuth",
    "credentials_presented",
    "made_by_script",
    "parse_basic_authorization",
]

Verifier = Callable[[str, str], Any | Awaitable[Any]]


@runtime_checkable
class Authenticator(Protocol):
    """Anything that turns a handshake's scope into a principal, or ``None``.

    Example, a bearer token checked against a set::

        class TokenAuth:
            async def __call__(self, scope):
                for name, value in scope["headers"]:
                    if name == b"authorization" and value[7:] in TOKENS:
                        return TOKENS[value[7:]]
                return None
    """

    async def __call__(self, scope: WWWScope) -> Any: ...


def credentials_presented(auth: Any, scope: WWWScope) -> bool:
    """Whether a handshake carries credentials for ``auth`` to check: only those count as
    failed logins when refused.

    An authenticator says so with a ``credentials_presented(scope)`` method of
    its own (:class:`BasicAuth` has one: an ``Authorization`` header); for one
    without, an ``Authorization`` or a ``Cookie`` header counts as credentials.
    A request without any (a browser's no-cors ``fetch`` from another site) is
    refused with 401 but cannot lock anyone out.

    Example::

        >>> credentials_presented(None, {"headers": [(b"cookie", b"session=1")]})
        True
        >>> credentials_presented(None, {"headers": [(b"accept", b"*/*")]})
        False
    """
    own = getattr(auth, "credentials_presented", None)
    if callable(own):
        return bool(own(scope))
    return any(key.lower() in (b"authorization", b"cookie") for key, _ in scope["headers"])


def made_by_script(scope: WWWScope) -> bool:
    """Whether only a page's script could have made this request: a WebSocket handshake, or
    a ``GET`` that asks for an event stream (``EventSource``, ``fetch``).

    Any page can make the others without script (an ``<img>``, a link, a form), with
    whatever URL it likes: a ``?ticket=`` there is nobody's guess, so it neither counts as
    a failed login nor consumes the ticket.

    Example::

        >>> made_by_script({"type": "http", "method": "GET", "headers": [(b"accept", b"image/*")]})
        False
        >>> made_by_script({"type": "websocket", "headers": []})
        True
    """
    if scope.get("type") == "websocket":
        return True
    return scope.get("method") == "GET" and any(
        key.lower() == b"accept" and b"text/event-stream" in value.lower()
        for key, value in scope["headers"]
    )


def parse_basic_authorization(value: bytes | str | None) -> tuple[str, str] | None:
    """Parse an ``Authorization: Basic`` header value into ``(username, password)``.

    Returns ``None`` for anything malformed: another scheme, bad base64, not
    UTF-8, no colon or an empty username. The password may contain colons.

    Example::

        >>> parse_basic_authorization(b"Basic dXNlcjpwYTpzcw==")
        ('user', 'pa:ss')
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    encoded = encoded.strip()
    if not encoded or len(encoded) > 8192:
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    username, colon, password = decoded.partition(":")
    if not colon or not username:
        return None
    return username, password


def _header(scope: WWWScope, name: bytes) -> list[bytes]:
    return [value for key, value in scope["headers"] if key.lower() == name]


class BasicAuth:
    """``Authorization: Basic`` authentication.

    Args:
        verify: ``verify(username, password)``, sync or async; returns a truthy
            principal (or ``True``) to accept, anything falsy to refuse. With
            ``True`` the principal is the username.
        realm: the realm named in the 401's ``WWW-Authenticate`` header.

    Example::

        async def verify(username, password):
            user = await users.get(username)
            return user if user and user.check_password(password) else None

        LivePanelApp(auth=BasicAuth(verify))
    """

    def __init__(self, verify: Verifier, realm: str = "livepanel") -> None:
        if not callable(verify):
            raise ConfigurationError("BasicAuth(verify): verify must be a callable")
        if '"' in realm or "\\" in realm or not realm.isprintable():
            raise ConfigurationError("BasicAuth: realm must be printable, without quotes")
        self.verify = verify
        self.realm = realm

    @classmethod
    def from_env(
        cls, user_var: str = "DASHBOARD_USERNAME", password_var: str = "DASHBOARD_PASSWORD"
    ) -> BasicAuth:
        """Accept the one user named by two environment variables, read now.

        The comparison takes the same time whatever the input.

        Raises:
            ConfigurationError: either variable is unset or empty.
        """
        username = os.environ.get(user_var, "")
        password = os.environ.get(password_var, "")
        for var, value in ((user_var, username), (password_var, password)):
            if not value:
                raise ConfigurationError(
                    f"BasicAuth.from_env: {var} is not set; set it or pass auth=None "
                    "to allow anonymous access"
                )
        return cls.for_user(username, password)

    @classmethod
    def for_user(cls, username: str, password: str, realm: str = "livepanel") -> BasicAuth:
        """Accept one user with one password; the comparison takes the same time whatever the input.

        Example::

            auth = BasicAuth.for_user("admin", secrets.token_urlsafe(12), realm="livepanel demo")

        Raises:
            ConfigurationError: an empty username or password.
        """
        if not username or not password:
            raise ConfigurationError("BasicAuth.for_user: the username and password must be set")
        expected_user = username.encode("utf-8")
        expected_password = password.encode("utf-8")

        def verify(given_user: str, given_password: str) -> bool:
            user_ok = hmac.compare_digest(given_user.encode("utf-8"), expected_user)
            password_ok = hmac.compare_digest(given_password.encode("utf-8"), expected_password)
            return user_ok & password_ok

        return cls(verify, realm=realm)

    def credentials_presented(self, scope: WWWScope) -> bool:
        """Whether the handshake carries an ``Authorization`` header (well-formed or not).

        Example::

            >>> BasicAuth(lambda u, p: True).credentials_presented({"headers": []})
            False
        """
        return bool(_header(scope, b"authorization"))

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value sent with a 401."""
        return f'Basic realm="{self.realm}", charset="UTF-8"'

    async def __call__(self, scope: WWWScope) -> Any:
        values = _header(scope, b"authorization")
        if len(values) != 1:
            return None
        credentials = parse_basic_authorization(values[0])
        if credentials is None:
            return None
        username, password = credentials
        result = self.verify(username, password)
        if inspect.isawaitable(result):
            result = await result
        if not result:
            return None
        return username if result is True else result

    def __repr__(self) -> str:
        return f"BasicAuth(realm={self.realm!r})"


class AnyOf:
    """Accepts what the first of several authenticators whose credentials it sees accepts.

    One endpoint then serves a dashboard that connects with a ticket and a
    script that sends Basic credentials. The authenticators are asked in
    order, each only when the handshake carries its kind of credentials
    (:func:`credentials_presented`): the first such one decides, and a
    refusal is final (the next is not tried). A handshake with credentials
    for none of them is refused. The 401's ``WWW-Authenticate`` is the first
    member's challenge (``Basic`` for :class:`BasicAuth`).

    Args:
        *authenticators: :class:`Authenticator` objects, in order.

    Raises:
        ConfigurationError: no authenticator, or one that is not callable.

    Example::

        from livepanel.tickets import TicketAuth, Tickets

        auth = AnyOf(BasicAuth.from_env(), TicketAuth(Tickets.from_env()))
        app.mount("/ws", LivePanelApp(auth=auth))
    """

    def __init__(self, *authenticators: Authenticator) -> None:
        if not authenticators:
            raise ConfigurationError("AnyOf: give at least one authenticator")
        for auth in authenticators:
            if not callable(auth):
                raise ConfigurationError(
                    f"AnyOf: {auth!r} is not an Authenticator (an async callable of the scope)"
                )
        self.authenticators = tuple(authenticators)

    def credentials_presented(self, scope: WWWScope) -> bool:
        """Whether the handshake carries credentials for any of the authenticators.

        Example::

            >>> basic = BasicAuth(lambda u, p: True)
            >>> AnyOf(basic).credentials_presented({"headers": [(b"authorization", b"x")]})
            True
        """
        return any(credentials_presented(auth, scope) for auth in self.authenticators)

    @property
    def challenge(self) -> str | None:
        """The ``WWW-Authenticate`` value of the first authenticator that has one."""
        for auth in self.authenticators:
            challenge = getattr(auth, "challenge", None)
            if isinstance(challenge, str):
                return challenge
        return None

    async def __call__(self, scope: WWWScope) -> Any:
        for auth in self.authenticators:
            if credentials_presented(auth, scope):
                return await auth(scope)
        return None

    def __repr__(self) -> str:
        return f"AnyOf({', '.join(repr(a) for a in self.authenticators)})"
