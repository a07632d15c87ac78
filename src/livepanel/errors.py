"""Exceptions raised by livepanel."""

from __future__ import annotations

__all__ = ["BackendUnavailable", "ConfigurationError", "LivePanelError"]


class LivePanelError(Exception):
    """Base class of livepanel's own exceptions.

    Example::

        try:
            await broadcaster.apublish(event)
        except LivePanelError as exc:  # BackendUnavailable, ...
            logger.warning("not published: %s", exc)
    """


class ConfigurationError(LivePanelError, ValueError):
    """livepanel was set up wrongly; the message says how to fix it.

    Raised at construction, so a mistake stops the app at start, not at the first request.

    Example::

        >>> from livepanel import BasicAuth
        >>> BasicAuth.from_env(user_var="NO_SUCH_VARIABLE")
        Traceback (most recent call last):
          ...
        livepanel.errors.ConfigurationError: BasicAuth.from_env: ...
    """


class BackendUnavailable(LivePanelError, ConnectionError):
    """The broadcaster's backend cannot take the event right now.

    Raised by ``await Broadcaster.apublish(...)`` (``publish()`` never raises it:
    it logs and counts instead) while Redis is unreachable.

    Example::

        try:
            event = await broadcaster.apublish(SessionKilled(session_key=key, agent_id=agent))
        except BackendUnavailable:
            return JSONResponse({"error": "try again"}, status_code=503)
    """
