"""The Lua scripts that keep the stream, its epoch record and its state consistent.

Each runs atomically in Redis, whatever number of processes race (see
:mod:`livepanel.backends.redis` for the epoch rules). :class:`Scripts`
registers them on one client and turns their replies into Python values;
:func:`state_spec` says how the publish script folds an event into the state
kept beside the stream, the same fold :class:`livepanel.state.StateFold` does
in each process.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Sequence
from typing import Any

from livepanel.backends.redis.codec import text
from livepanel.backends.redis.connect import RedisClient
from livepanel.backends.redis.settings import StreamKeys
from livepanel.events import Event, state_rules
from livepanel.state import entry_key

__all__ = [
    "Scripts",
    "StreamState",
    "new_epoch",
    "state_spec",
]

# Both scripts start here: make sure the record names the stream's current incarnation
# (a new one starts with an empty state).
_ENSURE_EPOCH = """
local exists = redis.call('EXISTS', KEYS[1]) == 1
if not exists then
  if not epoch or redis.call('HEXISTS', KEYS[2], 'first') == 1 then
    epoch = ARGV[1]
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
    redis.call('HSET', KEYS[2], 'epoch', epoch)
  end
elseif not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[2], 'epoch', epoch)
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if newest[1] then redis.call('HSET', KEYS[2], 'base', newest[1][1]) end
end
"""

# The state, updated with each entry in the same script: KEYS[3] is a hash of entries,
# field "<collection>\0<key>" -> "<seq, 20 digits><entry id>\n<event JSON>", plus "!last"
# (the newest entry folded), "!epoch", "!seq" and "#<collection>" (its size); KEYS[4] is
# a zset of "<collection>\0<seq>\0<key>" in lexical order: a collection's oldest update
# first, for eviction. Keyless collections use the seq as the key.
_FOLD = r"""
local S, O = KEYS[3], KEYS[4]
local function fold(entry_id, spec, json)
  local mode, coll, keep, key = string.match(spec, '^(%a)\n([^\n]*)\n([^\n]*)\n(.*)$')
  if not mode then return end
  local pad = string.format('%020d', redis.call('HINCRBY', S, '!seq', 1))
  local cap = tonumber(ARGV[4])
  if mode == 'k' then key = pad; cap = tonumber(keep) end
  local field = coll .. '\0' .. key
  local old = redis.call('HGET', S, field)
  if old then redis.call('ZREM', O, coll .. '\0' .. string.sub(old, 1, 20) .. '\0' .. key) end
  if mode == 'r' then
    if old then
      redis.call('HDEL', S, field)
      redis.call('HINCRBY', S, '#' .. coll, -1)
    end
    return
  end
  redis.call('HSET', S, field, pad .. entry_id .. '\n' .. json)
  redis.call('ZADD', O, 0, coll .. '\0' .. pad .. '\0' .. key)
  if old or redis.call('HINCRBY', S, '#' .. coll, 1) <= cap then return end
  local oldest = redis.call('ZRANGEBYLEX', O, '[' .. coll .. '\0', '[' .. coll .. '\1',
                            'LIMIT', 0, 1)[1]
  redis.call('ZREM', O, oldest)
  redis.call('HDEL', S, coll .. '\0' .. string.sub(oldest, #coll + 23))
  redis.call('HINCRBY', S, '#' .. coll, -1)
end
"""

# KEYS: stream, record, state, state order. ARGV: fresh epoch, MAXLEN, field, state limit,
# n, n event JSONs, n state specs ("" or "<u|r|k>\n<collection>\n<keep>\n<key JSON>").
_PUBLISH_SCRIPT = (
    "local epoch = redis.call('HGET', KEYS[2], 'epoch')\n"
    + _ENSURE_EPOCH
    + _FOLD
    + """
local n = tonumber(ARGV[5])
local ids = {}
for i = 1, n do
  local entry_id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', ARGV[3], ARGV[5 + i])
  ids[i] = entry_id
  if ARGV[5 + n + i] ~= '' then fold(entry_id, ARGV[5 + n + i], ARGV[5 + i]) end
end
if ids[1] then
  redis.call('HSETNX', KEYS[2], 'first', ids[1])
  redis.call('HSET', S, '!last', ids[n], '!epoch', epoch)
end
return {epoch, ids}
"""
)

# KEYS: record, state. One consistent read of the state and the epoch it belongs to.
_SEED_SCRIPT = """
return {redis.call('HGET', KEYS[1], 'epoch') or false, redis.call('HGETALL', KEYS[2])}
"""

# KEYS: stream, record, state, state order. ARGV: fresh epoch, epoch to retire or '', the
# caller's last entry id.
_STATE_SCRIPT = (
    """
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if ARGV[2] ~= '' and epoch == ARGV[2] then
  redis.call('DEL', KEYS[2])
  epoch = false
end
"""
    + _ENSURE_EPOCH
    + """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local retained = 0
local floor = false
if ARGV[3] ~= '0-0' then
  if #redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3]) > 0 then retained = 1 end
  local below = redis.call('XREVRANGE', KEYS[1], ARGV[3], '-', 'COUNT', 1)
  if below[1] then floor = below[1][1] end
end
return {epoch, newest[1] and newest[1][1] or false, oldest[1] and oldest[1][1] or false,
        redis.call('HGET', KEYS[2], 'base') or false, retained, floor}
"""
)


@dataclasses.dataclass(frozen=True)
class StreamState:
    """What the stream-state script found: the record's epoch and the stream's ends.

    Example::

        state = await scripts.stream_state(keys, last_id="1700000000000-3")
        state.last_retained  # False: the reader's last entry is gone (trimmed or rolled back)
    """

    epoch: str
    newest: str | None
    oldest: str | None
    base: str | None
    """The newest entry when this epoch began on a stream that held entries already."""
    last_retained: bool
    """The caller's last entry is still in the stream."""
    floor: str | None
    """The newest entry at or before the caller's last one."""


class Scripts:
    """The three scripts, registered on one client.

    Example::

        scripts = Scripts(client)
        epoch, ids = await scripts.append(keys, maxlen=1000, field="event", state_limit=10_000,
                                          texts=[encode_entry(event)], specs=[state_spec(event)])
    """

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._publish = client.register_script(_PUBLISH_SCRIPT)
        self._state = client.register_script(_STATE_SCRIPT)
        self._seed = client.register_script(_SEED_SCRIPT)

    async def append(
        self,
        keys: StreamKeys,
        *,
        maxlen: int,
        field: str,
        state_limit: int,
        texts: Sequence[str],
        specs: Sequence[str],
        pipeline: Any = None,
    ) -> tuple[str, list[str]]:
        """Append one entry per text under ``field`` and fold it by its spec, in one step:
        the epoch they went to and their entry ids. With ``pipeline``, queue the call there
        and return ``("", [])``: :meth:`appended` reads the reply."""
        args: list[str | int] = [
            new_epoch(),
            maxlen,
            field,
            state_limit,
            len(texts),
            *texts,
            *specs,
        ]
        if pipeline is not None:
            await self._publish(keys=keys.script_keys(), args=args, client=pipeline)
            return "", []
        return self.appended(await self._publish(keys=keys.script_keys(), args=args))

    @staticmethod
    def appended(reply: Any) -> tuple[str, list[str]]:
        """The publish script's reply: (epoch, entry ids)."""
        return text(reply[0]), [text(entry_id) for entry_id in reply[1]]

    async def stream_state(self, keys: StreamKeys, last_id: str, retire: str = "") -> StreamState:
        """Make sure the epoch record names the stream's current incarnation (retiring the
        epoch ``retire`` first, when given) and read the stream's ends around ``last_id``."""
        reply = await self._state(keys=keys.script_keys(), args=[new_epoch(), retire, last_id])
        epoch, newest, oldest, base, retained, floor = reply
        return StreamState(
            epoch=text(epoch),
            newest=None if newest is None else text(newest),
            oldest=None if oldest is None else text(oldest),
            base=None if base is None else text(base),
            last_retained=bool(retained),
            floor=None if floor is None else text(floor),
        )

    async def seed(self, keys: StreamKeys) -> tuple[str | None, dict[str, str]]:
        """The state kept in Redis and the epoch it belongs to, in one read."""
        reply = await self._seed(keys=[keys.epoch, keys.state])
        epoch = None if reply[0] is None else text(reply[0])
        flat = [text(item) for item in reply[1]]
        return epoch, dict(zip(flat[0::2], flat[1::2], strict=True))


def state_spec(event: Event) -> str:
    """How the publish script folds ``event`` into the state kept in Redis (``""``: not at all).

    ``"<u|r|k>\\n<collection>\\n<keep>\\n<key JSON>"``: upsert, remove, or keep the
    newest ``keep`` of a keyless collection.

    Example::

        >>> state_spec(Event("test.untracked", {}))
        ''
    """
    rule = state_rules().get(event.type)
    if rule is None:
        return ""
    where = entry_key(event, rule)
    if where is None:
        return ""
    if rule.key is None:
        return f"k\n{rule.collection}\n{rule.keep or 1}\n"
    key = json.dumps(where[1], ensure_ascii=False)
    return f"{'r' if rule.removes else 'u'}\n{rule.collection}\n\n{key}"


def new_epoch() -> str:
    """A fresh epoch token, offered to the scripts for when a new epoch must begin.

    Example::

        >>> len(new_epoch())
        12
    """
    return secrets.token_hex(6)
