"""The Redis backend's reader: one task per process hands new entries to the broadcaster.

It reads with ``XREAD BLOCK`` from the last entry it saw, checks the epoch
record with each read and follows a new epoch on its own. After a failure it
pauses (capped exponential backoff with jitter), then resyncs: a new epoch, a
stream rolled back to an older snapshot (its epoch is retired), or entries
trimmed before it could read them. Under Sentinel a quiet read also checks
that the primary has not moved. It keeps the state fold at its own position,
so a snapshot always matches a position of the stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from livepanel.backends.base import Control, Deliver, ReaderReport
from livepanel.backends.following import FollowingReader
from livepanel.backends.lifecycle import ReaderState
from livepanel.backends.redis.codec import (
    START,
    Position,
    RejectedEntry,
    control_of,
    decode_entry,
    entry_list,
    position,
    stream_entries,
    text,
)
from livepanel.backends.redis.connect import describe_error
from livepanel.backends.redis.link import Link
from livepanel.backends.redis.scripts import StreamState
from livepanel.backends.redis.settings import RedisSettings
from livepanel.backends.redis.tasks import finish
from livepanel.events import Event
from livepanel.protocol import make_id

__all__ = ["Reader", "ReaderState"]

logger = logging.getLogger("livepanel")

_READ_COUNT = 1000  # entries per XREAD
_DECODE_SLICE = 100  # entries checked between two turns of the event loop


class Reader(FollowingReader[RedisSettings, Position]):
    """Delivers the stream's new entries in order, and folds them into the state.

    Args:
        settings: the backend's settings.
        link: the backend's client.

    Example::

        reader = Reader(settings, link)
        reader.begin(loop, deliver, control, epoch, after="1700000000000-3")
        await reader.status(timeout=2.0)  # {"reachable": True, "running": True, ...}
        await reader.stop()
    """

    _server = "Redis"
    _task_name = "livepanel-redis-reader"
    _resume_message = "livepanel: reading %s from Redis again, after %s"

    def __init__(self, settings: RedisSettings, link: Link) -> None:
        super().__init__(settings, finish)
        self.link = link
        self.last_id = START
        """The newest entry read (or the one the reader starts after)."""
        self.position = (0, 0)
        self.rejected_entries = 0
        """Entries skipped because they are not valid events."""

    # ------------------------------------------------------------------ lifecycle

    def begin(
        self,
        loop: asyncio.AbstractEventLoop,
        deliver: Deliver,
        control: Control | None,
        epoch: str,
        after: str,
    ) -> None:
        """Deliver from the entry after ``after`` in ``epoch`` on, from a task on ``loop``."""
        self.move_to(after)
        self._begin(loop, deliver, control, epoch)

    def move_to(self, entry_id: str) -> None:
        """Read after ``entry_id`` from now on."""
        self.last_id = entry_id
        self.position = position(entry_id)

    # ------------------------------------------------------------------ the state

    async def caught_up(
        self,
        loop: asyncio.AbstractEventLoop,
        written: tuple[str, Position] | None,
        timeout: float,
    ) -> None:
        """Wait, at most ``timeout``, until the reader has read ``written`` (this process's
        newest entry), so that the state it answers holds what this process wrote."""
        await self._wait_for(loop, written, timeout)

    # ------------------------------------------------------------------ the task

    async def _read_forever(self) -> None:
        self._last_read_at = time.monotonic()
        await super()._read_forever()

    async def _reconnect(self) -> None:
        await self._resync()

    def _resume_args(self) -> tuple[object, object]:
        return self.settings.keys.stream, self.last_id

    def _say_lost(self, exc: Exception) -> None:
        if isinstance(exc, (RedisError, OSError, asyncio.TimeoutError)):
            self._lost_warning(describe_error(exc))
        else:
            logger.exception("livepanel: the Redis reader failed; restarting it")

    async def _read_round(self) -> None:
        entries, epoch = await self._read()
        self._last_read_at = time.monotonic()
        if epoch != self.epoch:
            await self._follow_new_epoch()
            return
        if not entries:
            await self._check_primary()
        await self._deliver_entries(entries)

    async def _read(self) -> tuple[list[tuple[str, Any]], str | None]:
        keys = self.settings.keys
        pipe = self.link.require().pipeline(transaction=False)
        pipe.xread({keys.stream: self.last_id}, count=_READ_COUNT, block=self.settings.block_ms())
        pipe.hget(keys.epoch, "epoch")  # the record as it is right after the read
        reply, epoch = await pipe.execute()
        return stream_entries(reply), None if epoch is None else text(epoch)

    async def _deliver_entries(self, entries: list[tuple[str, Any]]) -> None:
        """Check and deliver entries in slices, letting the loop run between them: checking an
        entry costs about as much as publishing one, and a read holds up to 1000."""
        for start in range(0, len(entries), _DECODE_SLICE):
            if start:
                await asyncio.sleep(0)
            self._deliver_slice(entries[start : start + _DECODE_SLICE])

    def _deliver_slice(self, entries: list[tuple[str, Any]]) -> None:
        if not entries:
            return
        epoch = self.epoch
        assert epoch is not None
        events: list[Event] = []
        for entry_id, fields in entries:
            control = control_of(fields)
            if control is not None:  # a revocation, in stream order with the events
                self.fold.apply_all(events)
                if events and self._deliver is not None:
                    self._deliver(events)
                events = []
                if self._control is not None and control:
                    self._control(control)
                continue
            try:
                event = decode_entry(fields)
            except RejectedEntry as exc:
                # anything that can write to the stream could forge frames: skip, count, say so
                self.rejected_entries += 1
                logger.warning(
                    "livepanel: skipped entry %s of %s: %s (counted in "
                    "stats()['rejected_entries'])",
                    entry_id,
                    self.settings.keys.stream,
                    exc.reason,
                )
                continue
            events.append(dataclasses.replace(event, id=make_id(epoch, entry_id)))
        self.move_to(entries[-1][0])
        self._hand_over(events)
        self._moved_on()

    # ------------------------------------------------------------------ epochs

    async def _stream_state(self, retire: str = "") -> StreamState:
        return await self.link.scripts().stream_state(self.settings.keys, self.last_id, retire)

    async def _resync(self) -> None:
        """After a reconnect: follow a new epoch, notice a rolled-back or trimmed history."""
        state = await self._stream_state()
        if state.epoch != self.epoch:
            self._adopt(state)
            return
        if self.last_id == START or state.last_retained or state.newest is None:
            return  # (a stream that is gone comes back, if ever, with a new epoch)
        stream = self.settings.keys.stream
        if state.floor is not None:
            # entries before ours survive but ours is gone: Redis came back from an older
            # snapshot, or a replica that lacked the newest entries was promoted; the ids
            # of what was lost may be issued again
            state = await self._stream_state(retire=state.epoch)
            logger.warning(
                "livepanel: Redis stream %s went back from %s to %s; starting a new epoch",
                stream,
                self.last_id,
                state.floor,
            )
            self._adopt(state, after=state.floor or state.newest or START)
        elif state.oldest is not None and position(state.oldest) > self.position:
            logger.warning(
                "livepanel: entries of %s after %s were trimmed before this process read them; "
                "raise history so the stream outlasts Redis outages",
                stream,
                self.last_id,
            )

    async def _follow_new_epoch(self) -> None:
        state = await self._stream_state()
        if state.epoch != self.epoch:
            self._adopt(state)

    def _adopt(self, state: StreamState, after: str | None = None) -> None:
        """Deliver in ``state.epoch`` from now on."""
        old = self.epoch
        self.epoch = state.epoch
        self.fold.reset(state.epoch)  # a new epoch starts with an empty state
        if after is not None:
            self.move_to(after)
        elif state.floor is not None and not state.last_retained:
            # the same stream, rolled back (a failover lost its newest entries): what
            # follows the newest surviving entry before ours is new to this reader
            self.move_to(state.floor)
        elif not state.last_retained:
            # a new incarnation: read it from its start, or from where this epoch took over
            self.move_to(state.base or START)
        self.fold.last_event_id = make_id(state.epoch, self.last_id)
        logger.warning(
            "livepanel: Redis stream %s is in a new epoch %s (was %s): its history was "
            "lost or replaced, so clients resuming from before will refetch their state",
            self.settings.keys.stream,
            state.epoch,
            old,
        )

    async def _check_primary(self) -> None:
        """Under Sentinel, after a quiet read: a failover leaves this reader on the old
        primary, which stays up and silent until Sentinel demotes it; move now."""
        pool = getattr(self.link.client, "connection_pool", None)
        if self.settings.topology != "sentinel" or not isinstance(pool, SentinelConnectionPool):
            return
        known = pool.master_address
        try:
            current = await pool.get_master_address()  # type: ignore[no-untyped-call]
        except RedisError:  # no sentinel answers: keep reading from the primary we have
            return
        if known is not None and current != known:
            raise RedisConnectionError(f"Sentinel moved the primary to {current[0]}:{current[1]}")

    # ------------------------------------------------------------------ health

    async def status(self, timeout: float = 2.0) -> ReaderReport:
        """Where the reader stands against the stream, asked of Redis now (see
        :meth:`livepanel.backends.redis.RedisBackend.reader_status`)."""
        status = self._report()
        client = self.link.client
        if client is None:
            return status
        last = self.last_id
        try:
            pipe = client.pipeline(transaction=False)
            pipe.time()
            pipe.xrange(
                self.settings.keys.stream, "-" if last == START else f"({last}", "+", count=1
            )
            (seconds, micros), unread = await asyncio.wait_for(pipe.execute(), timeout)
        except Exception:  # unreachable, slow, or a connection in a bad state: all unhealthy
            return status
        status["reachable"] = True
        entries = entry_list(unread)
        # the reader may have moved on while we asked: what it has read since is not waiting
        if entries and position(entries[0][0]) > self.position:
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            status["waiting"] = True
            status["lagSeconds"] = max(0.0, (now_ms - position(entries[0][0])[0]) / 1000)
        else:
            status["lagSeconds"] = 0.0
        return status
