"""Exceptions raised by livepanel."""

from __future__ import annotations

__all__ = ["BackendUnavailable", "ConfigurationError", "LivePanelError"]


class LivePanelError(Exception):
    """Base class of livepanel's own exceptions."""


class ConfigurationError(LivePanelError, ValueError):
    """livepanel was set up wrongly; the message says how to fix it."""


class BackendUnavailable(LivePanelError, ConnectionError):
    """The broadcaster's backend cannot take the event right now."""
