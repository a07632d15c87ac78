"""A client's acks on their way: sent with the next read, or later on a quiet stream.

:class:`~livepanel.client.stream.ClientStream` decides which ack is due (at
most one every ``ACK_INTERVAL`` seconds, the newest wins); :class:`AckSender`
sends it on the current connection, and when the stream is quiet sets a timer
so that a waiting ack does not wait for the next frame.
"""

from __future__ import annotations

import asyncio
import contextlib

from livepanel.client.connector import Connector
from livepanel.client.stream import ACK_INTERVAL, ClientStream

__all__ = ["AckSender"]


class AckSender:
    """Sends a client's coalesced acks on its current connection.

    Args:
        stream: the client's stream, which holds the ack waiting to go.
        connector: the client's connector, which holds the current connection.

    Example::

        acks = AckSender(stream, connector)
        stream.ack(event.id)
        await acks.send()  # now, or later on a quiet stream
    """

    def __init__(self, stream: ClientStream, connector: Connector) -> None:
        self._stream = stream
        self._connector = connector
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None  # held: a bare task may be collected

    async def send(self) -> None:
        """Send the waiting ack if its turn has come; else send it when it comes."""
        await self.flush()
        if self._stream.ack_waiting and self._timer is None:  # a quiet stream: send it later
            self._timer = asyncio.get_running_loop().call_later(ACK_INTERVAL, self._turn)

    async def flush(self, force: bool = False) -> None:
        """Send the waiting ack now if its turn has come (any time with ``force``)."""
        link = self._connector.link
        if link is None or not link.is_open:
            return
        message = self._stream.take_ack(asyncio.get_running_loop().time(), force)
        if message is not None:
            await link.send(message)

    def cancel(self) -> None:
        """Stop the timer (the client is closing)."""
        if self._timer is not None:
            self._timer.cancel()

    def _turn(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._send_waiting())

    async def _send_waiting(self) -> None:
        with contextlib.suppress(OSError):  # the connection is going: the next one gets it
            await self.flush()
