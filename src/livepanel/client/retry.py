"""A server's retry hints, without I/O: when it asks a client to come back, and how long to wait.

A worker over its admission rate refuses a handshake with HTTP 429 and
``Retry-After: <whole seconds>``; a worker shutting down (1012) or shedding
load (1013) closes with the reason ``retry_after=<seconds>``. The client waits
the hint plus jitter (so a thousand clients told the same thing do not come
back at the same instant), at most :data:`MAX_HINT` seconds, and such a wait is
not a failed attempt: it neither counts toward ``max_retries`` nor grows the
backoff. A hint that is not a finite number ≥ 0 is no hint.
"""

from __future__ import annotations

import math
import random
import re

__all__ = [
    "HINT_CLOSE_CODES",
    "MAX_HINT",
    "MIN_JITTER",
    "close_hint",
    "hinted_wait",
    "retry_after_header",
]

MAX_HINT = 300.0
"""The longest a client waits on a server's hint, in seconds (jitter included)."""
MIN_JITTER = 0.25
"""The jitter added to a hint is uniform in [0, max(this, 20 % of the hint)] seconds."""
HINT_CLOSE_CODES = frozenset({1012, 1013})
"""Close codes whose ``retry_after=<seconds>`` reason a client honours."""
_REASON = re.compile(r"(?:^|[\s;,])retry_after=([0-9]+(?:\.[0-9]+)?)(?:$|[\s;,])")
_SECONDS = re.compile(r"[0-9]{1,10}")


def close_hint(code: int, reason: str) -> float | None:
    """The seconds a close asks the client to wait, or ``None`` when it asks nothing.

    Example::

        >>> close_hint(1012, "retry_after=2.5"), close_hint(1013, "retry_after=NaN")
        (2.5, None)
        >>> close_hint(1000, "retry_after=2"), close_hint(1013, "retry_after=-5")
        (None, None)
    """
    if code not in HINT_CLOSE_CODES:
        return None
    match = _REASON.search(reason[:256])
    return _finite(float(match.group(1))) if match else None


def retry_after_header(value: str | None) -> float | None:
    """The seconds of a ``Retry-After`` header in whole seconds, or ``None``.

    Example::

        >>> retry_after_header("3"), retry_after_header("Wed, 21 Oct 2026 07:28:00 GMT")
        (3.0, None)
    """
    if value is None or not _SECONDS.fullmatch(value.strip()):
        return None
    return _finite(float(value.strip()))


def hinted_wait(hint: float, rng: random.Random | None = None) -> float:
    """The wait for a hint of ``hint`` seconds: the hint plus jitter, at most :data:`MAX_HINT`.

    Example::

        >>> 2.0 <= hinted_wait(2.0) <= 2.4
        True
    """
    hint = min(max(hint, 0.0), MAX_HINT)
    jitter = (rng or random).uniform(0.0, max(MIN_JITTER, 0.2 * hint))
    return min(hint + jitter, MAX_HINT)


def _finite(seconds: float) -> float | None:
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
