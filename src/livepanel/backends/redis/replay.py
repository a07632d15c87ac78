"""What a process reads of the stream's past: a ``since`` range, and the state at start.

A replay is vouched for only when its ``since`` is from the current epoch and
still in the stream (``<epoch>:0-0`` when the epoch's first entry still is):
it is read a page at a time, checking at each page that the epoch has not
changed meanwhile. The state kept in Redis seeds the reader's fold at start,
read in one step with the entry it covers.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from livepanel.backends.redis.codec import (
    START,
    RejectedEntry,
    decode_entry,
    decode_state,
    entry_list,
    position,
    text,
)
from livepanel.backends.redis.connect import describe_error
from livepanel.backends.redis.link import Link
from livepanel.backends.redis.scripts import StreamState
from livepanel.backends.redis.settings import RedisSettings
from livepanel.events import Event
from livepanel.protocol import make_id, parse_id
from livepanel.state import StateFold

__all__ = ["Replayer", "seed_fold"]

logger = logging.getLogger("livepanel")

_REPLAY_PAGE = 1000  # entries per XRANGE of a replay
_MAX_ID_PART = 2**64 - 1  # a stream entry id is two unsigned 64-bit numbers


class Replayer:
    """Reads the entries after a ``since``, in one consistent view of the stream.

    Args:
        settings: the backend's settings.
        link: the backend's client.

    Example::

        events = await Replayer(settings, link).replay("3f9c1a2b4d5e:1700000000000-3")
        # None: not from this epoch, no longer in the stream, or Redis cannot answer
    """

    def __init__(self, settings: RedisSettings, link: Link) -> None:
        self.settings = settings
        self.link = link
        self._failing = False  # replays fail now: logged once, until one works again

    async def replay(self, since: str) -> list[Event] | None:
        """Every retained entry after ``since``, or ``None`` when it cannot be vouched for."""
        epoch, parts = parse_id(since)
        client = self.link.client
        if len(parts) != 2 or client is None:
            return None
        if any(part > _MAX_ID_PART for part in parts):
            return None  # no stream entry has such an id: not a Redis failure, just unknown
        keys = self.settings.keys
        entry = f"{parts[0]}-{parts[1]}"
        try:
            pipe = client.pipeline(transaction=True)  # one consistent view
            pipe.hmget(keys.epoch, ["epoch", "first"])
            pipe.xrange(keys.stream, entry, entry)
            pipe.xrange(
                keys.stream, "-" if entry == START else f"({entry}", "+", count=_REPLAY_PAGE
            )
            (current, first), anchor, after = await pipe.execute()
            entries = entry_list(after)
            if current is not None and text(current) == epoch:
                entries += await self._rest_of_range(client, epoch, entries)
        except Exception as exc:
            if not self._failing:
                self._failing = True
                logger.warning(
                    "livepanel: cannot replay from Redis at %s (%s); clients resuming now "
                    "get resume_unavailable",
                    self.settings.location,
                    describe_error(exc),
                )
            return None
        self._failing = False
        if current is None or text(current) != epoch:
            return None
        if entries and entries[-1] is None:
            return None  # the epoch changed while the range was read: cannot vouch for it
        if entry == START:
            if first is None:
                if entries:
                    return None  # entries without a recorded start: cannot vouch for them
            else:
                start = position(text(first))
                entries = [e for e in entries if position(e[0]) >= start]
                if not entries or position(entries[0][0]) != start:
                    return None  # the epoch's first entry was trimmed
        elif not anchor:
            return None
        events: list[Event] = []
        for entry_id, fields in entries:
            try:
                event = decode_entry(fields)
            except RejectedEntry:
                continue  # logged and counted when the reader met it
            events.append(dataclasses.replace(event, id=make_id(epoch, entry_id)))
        return events

    async def _rest_of_range(
        self, client: Any, epoch: str, first_page: list[tuple[str, Any]]
    ) -> list[Any]:
        """The entries after a full first page, a page at a time (one reply never holds a
        whole long history); ends with ``None`` when the epoch changed meanwhile."""
        keys = self.settings.keys
        rest: list[Any] = []
        page = first_page
        while len(page) == _REPLAY_PAGE:
            pipe = client.pipeline(transaction=True)
            pipe.hget(keys.epoch, "epoch")
            pipe.xrange(keys.stream, f"({page[-1][0]}", "+", count=_REPLAY_PAGE)
            current, after = await pipe.execute()
            if current is None or text(current) != epoch:
                return [None]
            page = entry_list(after)
            rest.extend(page)
        return rest


def seed_fold(fold: StateFold, state: StreamState, seed: tuple[str | None, dict[str, str]]) -> str:
    """Load ``fold`` with the state kept in Redis; return the entry the reader starts after.

    The state names the newest entry it folded (``!last``): the reader
    delivers what follows, so the fold and the stream stay at one position.
    Without a state of this epoch, the reader starts after the newest entry.

    Example::

        after = seed_fold(reader.fold, await scripts.stream_state(keys, "0-0"),
                          await scripts.seed(keys))
    """
    epoch, fields = seed
    last = fields.get("!last")
    if epoch != state.epoch or fields.get("!epoch") != state.epoch or last is None:
        start = state.newest or START  # no state kept in this epoch yet
        fold.reset(state.epoch, make_id(state.epoch, start))
        return start
    fold.reset(state.epoch)
    fold.apply_all(decode_state(state.epoch, fields))
    fold.last_event_id = make_id(state.epoch, last)
    return last
