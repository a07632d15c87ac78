"""The Redis backend's writer: everything this process appends to the stream.

Events handed over from any thread wait in this process and one task writes
them in batches (see :mod:`livepanel.backends.queued`) through the publish
script.
"""

from __future__ import annotations

import asyncio
import json
import logging

from redis.exceptions import RedisError

from livepanel.backends.lifecycle import WriterState
from livepanel.backends.queued import QueuedWriter
from livepanel.backends.redis.codec import CONTROL_FIELD, FIELD, Position, encode_entry, position
from livepanel.backends.redis.connect import describe_error
from livepanel.backends.redis.link import Link
from livepanel.backends.redis.scripts import state_spec
from livepanel.backends.redis.settings import RedisSettings
from livepanel.backends.redis.tasks import finish
from livepanel.errors import BackendUnavailable
from livepanel.events import Event

__all__ = ["Writer", "WriterState"]

logger = logging.getLogger("livepanel")

# an event, itself again (encoded when written), and who awaits its id
_Item = tuple[Event | None, Event, "asyncio.Future[Event | None] | None"]


class _Unreplicated(Exception):
    """Written to the primary, but not confirmed by ``wait_replicas`` replicas in time."""


class Writer(QueuedWriter[RedisSettings, Event, Position]):
    """Writes events and control messages to the stream, in the order they were handed over.

    Args:
        settings: the backend's settings.
        link: the backend's client.

    Example::

        writer = Writer(settings, link)
        writer.publish_nowait(event)  # held until start
        writer.begin(asyncio.get_running_loop())
        await writer.stop(timeout=5.0)  # flushes what is queued first
    """

    _server = "Redis"
    _task_name = "livepanel-redis-writer"
    _batch_size = 200  # events per script call

    def __init__(self, settings: RedisSettings, link: Link) -> None:
        super().__init__(settings, finish)
        self.link = link

    async def publish(self, event: Event) -> Event:
        """Write ``event`` and return it with its id.

        Raises:
            BackendUnavailable: not started on this loop, or Redis did not take it in time.
        """
        stored = await self._submit(event, event)
        assert stored is not None
        return stored

    async def write_control(self, message: dict[str, object]) -> None:
        """Append a control entry now, ahead of queued events.

        Raises:
            BackendUnavailable: Redis did not take it.
        """
        text = json.dumps(message, separators=(",", ":"))
        settings = self.settings
        try:
            scripts = self.link.scripts()
            await asyncio.wait_for(
                scripts.append(
                    settings.keys,
                    maxlen=settings.maxlen,
                    field=CONTROL_FIELD,
                    state_limit=settings.state_limit,
                    texts=[text],
                    specs=[""],
                ),
                settings.timeout,
            )
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise BackendUnavailable(
                f"livepanel: Redis at {settings.location} did not take a control message "
                f"({describe_error(exc)})"
            ) from None

    # ------------------------------------------------------------------ writing a batch

    def _body(self, event: Event) -> Event:
        return event

    def _position(self, entry_id: str) -> Position:
        return position(entry_id)

    async def _append(self, batch: list[_Item]) -> tuple[str, list[str]]:
        settings = self.settings
        events = [event for _, event, _ in batch]
        scripts = self.link.scripts()
        # WAIT counts the replicas that have this connection's writes: one pipeline, one socket
        pipe = scripts.client.pipeline(transaction=False) if settings.wait_replicas else None
        appended = await scripts.append(
            settings.keys,
            maxlen=settings.maxlen,
            field=FIELD,
            state_limit=settings.state_limit,
            texts=[encode_entry(event) for event in events],
            specs=[state_spec(event) for event in events],
            pipeline=pipe,
        )
        if pipe is None:
            return appended
        pipe.execute_command("WAIT", settings.wait_replicas, int(settings.wait_timeout * 1000))
        reply, acked = await pipe.execute()
        if int(acked) < settings.wait_replicas:
            raise _Unreplicated(
                f"livepanel: Redis at {settings.location} stored the event but {acked} of "
                f"{settings.wait_replicas} replica(s) confirmed it within "
                f"{settings.wait_timeout:g} s; a failover may lose it, or it may still be "
                "delivered"
            )
        return scripts.appended(reply)

    async def _failed(self, batch: list[_Item], exc: Exception) -> None:
        reason = describe_error(exc)
        message = str(exc) if isinstance(exc, _Unreplicated) else self._cannot_take(reason)
        self._drop(batch, message, reason)
        if isinstance(exc, (RedisError, OSError, _Unreplicated)):
            await self.link.forget_idle_connections()
