"""The state kept for clients: collections folded from the stream, without I/O.

Events of a type declared with ``event_type(..., collection=...)`` change a
collection (SPEC section 7). :class:`StateFold` applies events in stream
order and answers a :class:`StateSnapshot`: the fold up to and including one
event id. :func:`state_frame` turns a snapshot into the wire's ``state``
frame for one connection's type filter. Nothing here touches a socket, a
loop or a backend: the backend keeps the fold next to the stream, in the
same order as the ids. See ``docs/state.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from livepanel.events import Event, StateRule, format_timestamp, state_rule_of, state_rules
from livepanel.type_filter import TypeFilter

__all__ = [
    "DEFAULT_STATE_LIMIT",
    "ClientState",
    "StateFold",
    "StateSnapshot",
    "conflation_key",
    "entry_key",
    "state_frame",
    "state_payload",
]

logger = logging.getLogger("livepanel")
_RULES = state_rules()  # a live view: types registered later count too
_RULE_OF = state_rule_of  # the hot path: the registry's own lookup

DEFAULT_STATE_LIMIT = 10_000
"""Most entries one keyed collection holds; beyond it the entry updated longest ago goes."""


def entry_key(event: Event, rule: StateRule | None = None) -> tuple[str, Any] | None:
    """The ``(collection, key)`` an event changes, or ``None`` when it changes no state.

    Keyless collections answer ``(collection, None)``. A key value that is
    not a JSON scalar is compared by its JSON text.

    Example::

        >>> import livepanel.events.builtin  # the built-in types are opt-in
        >>> entry_key(Event("session.killed", {"sessionKey": "s1", "agentId": "a1"}))
        ('sessions', 's1')
        >>> entry_key(Event("cron.executed", {"jobId": "j", "command": "c", "exitCode": 0,
        ...                                   "durationMs": 1}))
        ('cronRuns', None)
    """
    if rule is None:
        rule = _RULES.get(event.type)
        if rule is None:
            return None
    if rule.key is None:
        return rule.collection, None
    value = _comparable(event.payload.get(rule.key))
    if value is None:
        return None  # an optional key left out: the event changes no entry
    return rule.collection, value


def _comparable(value: Any) -> Any:
    """A key's value as entries are told apart: a JSON scalar as it is, anything else by its
    JSON text (one rule for the server's fold, its frames and the client's state)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def conflation_key(event: Event) -> tuple[str, Any] | None:
    """What a newer event must share with a queued one to supersede it, or ``None``.

    An entry of a keyed collection, or a singleton (``keep=1``): only the
    newest event for it matters to the state. The events of a collection
    keeping several (``cronRuns``) never supersede each other.

    Example::

        >>> import livepanel.events.builtin  # the built-in types are opt-in
        >>> conflation_key(Event("agent.status", {"agentId": "a1", "status": "idle",
        ...                                       "activeSessionCount": 0}))
        ('agents', 'a1')
        >>> conflation_key(Event("cron.executed", {"jobId": "j", "command": "c",
        ...                                        "exitCode": 0, "durationMs": 1})) is None
        True
    """
    rule = _RULES.get(event.type)
    if rule is None or (rule.key is None and rule.keep != 1):
        return None
    return entry_key(event, rule)


@dataclasses.dataclass(frozen=True)
class StateSnapshot:
    """The fold of the stream up to and including ``last_event_id``.

    ``collections`` maps each collection's name to its entries, oldest update
    first; ``rules`` are the declarations the fold applied.

    Example::

        >>> import livepanel.events.builtin  # the built-in types are opt-in
        >>> fold = StateFold("e1")
        >>> fold.apply(Event("gateway.status", {"status": "running", "version": "1",
        ...                                     "uptime": 1.0}, id="e1:1"))
        >>> snapshot = fold.snapshot()
        >>> snapshot.last_event_id, [e.id for e in snapshot.collections["gateway"]]
        ('e1:1', ['e1:1'])
    """

    last_event_id: str
    collections: Mapping[str, list[Event]]
    rules: Mapping[str, StateRule]


class StateFold:
    """Applies events to the declared collections, in stream order.

    Args:
        epoch: the stream's epoch; an event of another epoch starts over empty.
        limit: most entries of one keyed collection (the one updated longest
            ago is evicted, counted in :attr:`evicted` and logged once).
        start_id: the id the fold stands at while no event was applied
            (default ``"<epoch>:0"``).

    Example::

        >>> import livepanel.events.builtin  # the built-in types are opt-in
        >>> fold = StateFold("e1", limit=2)
        >>> for n in range(3):
        ...     fold.apply(Event("session.created", {"sessionKey": f"s{n}", "agentId": "a",
        ...                                          "kind": "direct"}, id=f"e1:{n + 1}"))
        >>> list(fold.keys("sessions")), fold.evicted
        (['s1', 's2'], 1)
    """

    def __init__(
        self, epoch: str, *, limit: int = DEFAULT_STATE_LIMIT, start_id: str | None = None
    ) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError("StateFold: limit must be an integer >= 1")
        self.epoch = epoch
        self._prefix = f"{epoch}:"
        self.limit = limit
        self.last_event_id = start_id if start_id is not None else f"{epoch}:0"
        self.evicted = 0
        self._warned = False
        self._keyed: dict[str, OrderedDict[Any, Event]] = {}
        self._kept: dict[str, deque[Event]] = {}

    def reset(self, epoch: str, start_id: str | None = None) -> None:
        """Start over empty in ``epoch`` (the stream lost its history)."""
        self.epoch = epoch
        self._prefix = f"{epoch}:"
        self.last_event_id = start_id if start_id is not None else f"{epoch}:0"
        self._keyed.clear()
        self._kept.clear()

    def apply(self, event: Event) -> None:
        """Fold one event (with its id) into the state; events of no collection only move
        the position."""
        event_id = event.id
        if event_id is not None:
            if not event_id.startswith(self._prefix):
                self.reset(event_id.partition(":")[0])
            self.last_event_id = event_id
        rule = _RULE_OF(event.type)
        if rule is None:
            return
        name = rule.collection
        if rule.key is None:
            kept = self._kept.get(name)
            keep = rule.keep or 1
            if kept is None or kept.maxlen != keep:
                kept = self._kept[name] = deque(kept or (), maxlen=keep)
            kept.append(event)
            return
        key = _comparable(event.payload.get(rule.key))
        if key is None:
            return  # an optional key left out: the event changes no entry
        entries = self._keyed.get(name)
        if entries is None:
            entries = self._keyed[name] = OrderedDict()
        if rule.removes:
            entries.pop(key, None)
            return
        entries[key] = event
        entries.move_to_end(key)
        if len(entries) > self.limit:
            entries.popitem(last=False)
            self.evicted += 1
            if not self._warned:
                self._warned = True
                logger.warning(
                    "livepanel: state collection %r holds more than %d entries; evicting "
                    "the ones updated longest ago (raise state_limit to keep more)",
                    name,
                    self.limit,
                )

    def apply_all(self, events: Iterable[Event]) -> None:
        """Fold several events in order."""
        for event in events:
            self.apply(event)

    def keys(self, collection: str) -> list[Any]:
        """The keys of a keyed collection, oldest update first."""
        return list(self._keyed.get(collection, ()))

    def snapshot(self) -> StateSnapshot:
        """The state as it stands: every declared collection, empty ones included."""
        rules = dict(_RULES)
        collections: dict[str, list[Event]] = {}
        for rule in rules.values():
            if rule.key is None:
                collections[rule.collection] = list(self._kept.get(rule.collection, ()))
            else:
                collections[rule.collection] = list(self._keyed.get(rule.collection, {}).values())
        return StateSnapshot(self.last_event_id, collections, rules)


def _collections_for(
    snapshot: StateSnapshot, types: TypeFilter | None
) -> tuple[dict[str, StateRule], dict[str, StateRule]]:
    """The types (and their collections) a filter lets through."""
    passing = {
        kind: rule for kind, rule in snapshot.rules.items() if types is None or types.matches(kind)
    }
    collections: dict[str, StateRule] = {}
    for rule in passing.values():
        collections.setdefault(rule.collection, rule)
    return passing, collections


def state_payload(snapshot: StateSnapshot, types: TypeFilter | None = None) -> dict[str, Any]:
    """The ``state`` frame's payload as Python data (what ``Broadcaster.state()`` returns).

    Only collections with a type that passes ``types`` are included.

    Example::

        >>> import livepanel.events.builtin  # the built-in types are opt-in
        >>> payload = state_payload(StateFold("e1").snapshot(), TypeFilter(["gateway.*"]))
        >>> payload["lastEventId"], payload["collections"], payload["types"]
        ('e1:0', {'gateway': {'key': None, 'keep': 1, 'entries': []}}, \
{'gateway.status': {'collection': 'gateway', 'removes': False}})
    """
    passing, collections = _collections_for(snapshot, types)
    return {
        "lastEventId": snapshot.last_event_id,
        "collections": {
            name: {
                "key": rule.key,
                "keep": rule.keep,
                "entries": [e.to_dict() for e in snapshot.collections.get(name, ())],
            }
            for name, rule in collections.items()
        },
        "types": {
            kind: {"collection": rule.collection, "removes": rule.removes}
            for kind, rule in passing.items()
        },
    }


def state_frame(
    snapshot: StateSnapshot,
    types: TypeFilter | None = None,
    now: datetime | None = None,
    *,
    sees: Callable[[Event], bool] | None = None,
) -> str:
    """The wire's ``state`` frame for a connection with type filter ``types``.

    Entries are whole events with their ids; with ``sees``, only those it
    accepts (the connection's audience, SPEC section 8). Built by joining
    each entry's JSON, the same text a live event has.

    Example::

        >>> import livepanel.events.builtin  # the built-in types are opt-in
        >>> frame = state_frame(StateFold("e1").snapshot(), TypeFilter(["agent.*"]))
        >>> json.loads(frame)["payload"]["collections"]
        {'agents': {'key': 'agentId', 'keep': None, 'entries': []}}
    """
    passing, collections = _collections_for(snapshot, types)
    dumps = json.dumps
    parts = []
    for name, rule in collections.items():
        found = snapshot.collections.get(name, ())
        entries = ",".join([e.to_json() for e in found if sees is None or sees(e)])
        head = dumps({"key": rule.key, "keep": rule.keep}, separators=(",", ":"))
        parts.append(f'{dumps(name)}:{head[:-1]},"entries":[{entries}]}}')
    kinds = dumps(
        {
            kind: {"collection": rule.collection, "removes": rule.removes}
            for kind, rule in passing.items()
        },
        separators=(",", ":"),
    )
    stamp = format_timestamp(now or datetime.now(timezone.utc))
    return (
        f'{{"type":"state","timestamp":"{stamp}","payload":{{"lastEventId":'
        f'{dumps(snapshot.last_event_id)},"collections":{{{",".join(parts)}}},'
        f'"types":{kinds}}}}}'
    )


class ClientState:
    """The state as a client keeps it: loaded from a ``state`` frame, then kept current by
    the live events that follow, with the rules the frame carries (``types``).

    ``collections`` maps each collection's name to a dict of its entries (by
    key; keyless collections by event id), oldest update first. This is what
    :attr:`livepanel.client.Client.state` holds; it needs no registered types.

    Example::

        >>> state = ClientState()
        >>> state.load({"lastEventId": "e1:1", "collections": {"agents": {"key": "agentId",
        ...     "keep": None, "entries": []}}, "types": {"agent.status": {"collection": "agents",
        ...     "removes": False}}})
        'e1:1'
        >>> state.apply(Event("agent.status", {"agentId": "a1", "status": "idle",
        ...                                    "activeSessionCount": 0}, id="e1:2"))
        True
        >>> list(state.collections["agents"]), state.last_event_id
        (['a1'], 'e1:2')
    """

    def __init__(self) -> None:
        self.collections: dict[str, dict[Any, Event]] = {}
        self.last_event_id: str | None = None
        self.loaded = False
        self._layout: dict[str, tuple[str | None, int | None]] = {}
        self._types: dict[str, tuple[str, bool]] = {}

    def load(self, payload: Mapping[str, Any]) -> str | None:
        """Replace everything with a ``state`` frame's payload; return its ``lastEventId``."""
        collections: dict[str, dict[Any, Event]] = {}
        layout: dict[str, tuple[str | None, int | None]] = {}
        raw = payload.get("collections")
        for name, collection in (raw if isinstance(raw, Mapping) else {}).items():
            if not isinstance(collection, Mapping):
                continue
            key = collection.get("key") if isinstance(collection.get("key"), str) else None
            keep = collection.get("keep") if isinstance(collection.get("keep"), int) else None
            layout[name] = (key, keep)
            entries: dict[Any, Event] = {}
            for data in collection.get("entries") or ():
                try:
                    event = Event.from_dict(data)
                except ValueError:
                    continue
                entries[self._key(event, key)] = event
            collections[name] = entries
        types: dict[str, tuple[str, bool]] = {}
        raw_types = payload.get("types")
        for kind, rule in (raw_types if isinstance(raw_types, Mapping) else {}).items():
            if isinstance(rule, Mapping) and rule.get("collection") in layout:
                types[kind] = (rule["collection"], rule.get("removes") is True)
        self.collections, self._layout, self._types = collections, layout, types
        last = payload.get("lastEventId")
        self.last_event_id = last if isinstance(last, str) else None
        self.loaded = True
        return self.last_event_id

    def apply(self, event: Event) -> bool:
        """Apply one live event; return whether it changed a collection."""
        if event.id is not None:
            self.last_event_id = event.id
        rule = self._types.get(event.type)
        if rule is None:
            return False
        name, removes = rule
        key_field, keep = self._layout[name]
        entries = self.collections[name]
        key = self._key(event, key_field)
        if key is None:
            return False
        entries.pop(key, None)  # an update moves to the end, as on the server
        if not removes:
            entries[key] = event
        if key_field is None:
            while len(entries) > (keep or 1):
                del entries[next(iter(entries))]
        return True

    @staticmethod
    def _key(event: Event, key_field: str | None) -> Any:
        if key_field is None:
            return event.id
        return _comparable(event.payload.get(key_field))
