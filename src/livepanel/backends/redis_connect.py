"""Moved to :mod:`livepanel.backends.redis.connect`; this name keeps existing imports working.

Example::

    from livepanel.backends.redis.connect import parse_target  # instead of this module
"""

from __future__ import annotations

import warnings

from livepanel.backends.redis.connect import (
    SCHEMES,
    RedisTarget,
    check_deployment,
    companion_key,
    make_client,
    parse_target,
    redact_url,
)

__all__ = [
    "SCHEMES",
    "RedisTarget",
    "check_deployment",
    "companion_key",
    "make_client",
    "parse_target",
    "redact_url",
]

warnings.warn(
    "livepanel.backends.redis_connect is now livepanel.backends.redis.connect; import it "
    "from there",
    DeprecationWarning,
    stacklevel=2,
)
