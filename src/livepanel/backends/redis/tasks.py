"""The Redis backend's tasks: ending one for sure."""

from __future__ import annotations

import asyncio
import logging

from livepanel.backends.redis.connect import describe_error

__all__ = ["finish"]

logger = logging.getLogger("livepanel")


async def finish(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it; cancel again if a cancellation was swallowed
    (``asyncio.wait_for`` can lose one on Python < 3.12).

    Example::

        await finish(reader_task)  # it is done when this returns
    """
    for _ in range(50):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    error = task.exception() if task.done() and not task.cancelled() else None
    if error is not None:
        logger.warning("livepanel: a Redis backend task ended with %s", describe_error(error))
