"""Events in Python: what ``Broadcaster.subscribe()`` yields, and how it ends."""

from __future__ import annotations

from livepanel.connection import CloseReason, Connection
from livepanel.errors import LivePanelError
from livepanel.events import Event

__all__ = ["SlowConsumer", "Subscription"]


class SlowConsumer(LivePanelError):
    """A subscription fell ``queue_size`` events behind and was closed.

    Example::

        async with broadcaster.subscribe() as events:
            try:
                async for event in events:
                    await slow_handler(event)
            except SlowConsumer:
                ...  # resubscribe with since=<last id handled> to catch up
    """


class Subscription:
    """What ``Broadcaster.subscribe()`` yields: an async iterator of events.

    Attributes:
        last_event_id: the newest event id when the subscription opened.
        resumed: ``True`` when ``since`` was honoured, ``False`` when it was not
            retained (the consumer must refetch state), ``None`` without ``since``.

    Example::

        async with broadcaster.subscribe(["cron.*"], since=last_id) as events:
            if events.resumed is False:
                state = await refetch()
            async for event in events:
                state.apply(event)
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.last_event_id = connection.last_event_id
        self.resumed: bool | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        event = await self._connection.next_event()
        if event is not None:
            return event
        if self._connection.close_reason is CloseReason.SLOW_CONSUMER:
            raise SlowConsumer("the subscription fell too far behind and was closed")
        raise StopAsyncIteration
