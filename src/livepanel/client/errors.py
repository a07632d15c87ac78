"""The client's exceptions: a refused handshake, a lost connection, a gap in the stream.

They are imported from :mod:`livepanel.client`, with the client; the package
face (``livepanel``) does not export them.
"""

from __future__ import annotations

from livepanel.errors import LivePanelError

__all__ = [
    "AuthenticationError",
    "ConnectionFailed",
    "HandshakeRejected",
    "OpenTimeout",
    "PermissionDenied",
    "ResumeUnavailable",
]


class HandshakeRejected(LivePanelError):
    """The server answered the WebSocket handshake with an HTTP error status.

    Attributes:
        status: the HTTP status code (``429``, ``404``...).
        code: livepanel's error code from the JSON body (``"unauthorized"``), if any.
        retry_after: the seconds a 429's ``Retry-After`` asked to wait, if it gave them.

    Example::

        try:
            async with connect(url, username=user, password=pw) as client:
                ...
        except AuthenticationError:
            print("wrong username or password")
        except HandshakeRejected as exc:
            print("refused:", exc.status, exc.code)
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class AuthenticationError(HandshakeRejected):
    """The server refused the credentials (HTTP 401); reconnecting would not help.

    Example::

        try:
            async with connect(url, username="admin", password=password) as client:
                ...
        except AuthenticationError:
            sys.exit("wrong username or password")
    """


class PermissionDenied(HandshakeRejected):
    """The server refused this user, origin or plain-text connection (HTTP 403).

    ``code`` says which: ``"forbidden"``, ``"origin_not_allowed"`` or ``"tls_required"``.

    Example::

        except PermissionDenied as exc:
            sys.exit(f"not allowed ({exc.code}): {exc}")
    """


class ConnectionFailed(LivePanelError, ConnectionError):
    """The connection could not be opened, or it was lost and every retry failed.

    Example::

        try:
            async with connect(url, max_retries=3) as client:
                async for event in client:
                    ...
        except ConnectionFailed as exc:
            print("gave up:", exc)
    """


class OpenTimeout(ConnectionFailed, TimeoutError):
    """The server did not complete the handshake and ``welcome`` within ``open_timeout``.

    Example::

        except OpenTimeout:
            print("the server did not answer within 10 s")
    """


class ResumeUnavailable(LivePanelError):
    """Events after ``since`` are no longer retained: some were missed; refetch your state.

    Raised by the iterator exactly where the gap is: every event before it has
    been yielded, and iterating again goes on with the live stream.

    Attributes:
        since: the id the client asked to resume after.
        last_event_id: where the client resumes from now (the newest id it knows).

    Example::

        while True:
            try:
                async for event in client:
                    apply(state, event)
                break
            except ResumeUnavailable:
                state = await fetch_state()
    """

    def __init__(self, since: str | None, last_event_id: str | None, message: str = "") -> None:
        super().__init__(
            f"cannot resume after {since!r}: {message or 'those events are no longer retained'}"
        )
        self.since = since
        self.last_event_id = last_event_id
