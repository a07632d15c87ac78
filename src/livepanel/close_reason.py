"""Why a connection ended: :class:`CloseReason`, which the transport turns into a close code.

Its own module so that both the connection and its writer can name the reasons.
"""

from __future__ import annotations

import enum

__all__ = ["CloseReason"]


class CloseReason(enum.Enum):
    """Why a connection ended; the transport turns it into a close code.

    Example::

        >>> CloseReason.SLOW_CONSUMER.flushes_first
        False
    """

    CLIENT_LEFT = "client_left"
    """The client went away (or closed): nothing more to send."""
    GOING_AWAY = "going_away"
    """The server is going away without a restart in view (1001)."""
    SERVICE_RESTART = "service_restart"
    """The worker is shutting down, and says when to come back (1012)."""
    POLICY_VIOLATION = "policy_violation"
    """The client kept sending after ``rate_limited`` (1008)."""
    MESSAGE_TOO_BIG = "message_too_big"
    """A client frame exceeded ``max_message_size`` (1009)."""
    INTERNAL_ERROR = "internal_error"
    """A write failed for a reason other than a vanished client (1011)."""
    SLOW_CONSUMER = "slow_consumer"
    """The queue was full under ``slow_consumer="disconnect"`` (1013)."""
    REVOKED = "revoked"
    """``Broadcaster.disconnect()`` named it (its ``code``, 1008 by default)."""

    @property
    def flushes_first(self) -> bool:
        """Whether what is queued (pongs, ``rate_limited``) goes out before the close."""
        return self in _FLUSH_FIRST


_FLUSH_FIRST = frozenset({CloseReason.POLICY_VIOLATION, CloseReason.MESSAGE_TOO_BIG})
