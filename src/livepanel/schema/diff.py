"""``livepanel schema diff OLD NEW``: which changes of the event types break a dashboard.

A dashboard is built on OLD (its TypeScript types, its handlers). A change is
*breaking* when that dashboard can meet a payload it was not written for, or
lose one it relies on: an event type removed; a required field added, removed
or renamed (removed and another added); a field's type changed; a required
field made optional; a literal narrowed (a value it handles disappears); an
integer widened to a number; a bound dropped (``NonNegative``); the state
collection or key of a type changed. Additive changes (a new type, a new
optional field, an optional field made required, a literal widened) keep it
working. See ``docs/typed-events.md``.

Example::

    >>> old = {"events": {"a.b": {"type": "object", "properties": {"x": {"type": "string"}},
    ...                           "required": ["x"]}}}
    >>> [str(change) for change in diff_schemas(old, {"events": {}})]
    ['breaking  a.b: event type removed']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["SchemaChange", "diff_schemas", "is_breaking"]


@dataclasses.dataclass(frozen=True)
class SchemaChange:
    """One difference between two schema documents, for one event type.

    ``where`` is the event type, then the path of the field (``session.created:
    payload.kind``).

    Example::

        >>> str(SchemaChange("a.b: payload.x", "optional field added", breaking=False))
        'additive  a.b: payload.x: optional field added'
    """

    where: str
    what: str
    breaking: bool

    def __str__(self) -> str:
        return f"{'breaking' if self.breaking else 'additive'}  {self.where}: {self.what}"


def is_breaking(changes: list[SchemaChange]) -> bool:
    """Whether any of ``changes`` breaks a dashboard built on the old schema.

    Example::

        >>> is_breaking([SchemaChange("a.b", "event type added", breaking=False)])
        False
    """
    return any(change.breaking for change in changes)


def diff_schemas(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[SchemaChange]:
    """The changes from schema document ``old`` to ``new`` (both what ``livepanel schema``
    prints), breaking ones first, each list in type and field order.

    Args:
        old: ``{"events": {type: schema}}`` the dashboard was built on.
        new: the same, of the server about to be deployed.

    Raises:
        ValueError: either document is not ``{"events": {...}}``.

    Example::

        >>> new = {"events": {"a.b": {"type": "object", "properties": {}}}}
        >>> [str(change) for change in diff_schemas({"events": {}}, new)]
        ['additive  a.b: event type added']
    """
    old_events, new_events = _events(old, "OLD"), _events(new, "NEW")
    changes: list[SchemaChange] = []
    for name in sorted(old_events.keys() | new_events.keys()):
        if name not in new_events:
            changes.append(SchemaChange(name, "event type removed", breaking=True))
        elif name not in old_events:
            changes.append(SchemaChange(name, "event type added", breaking=False))
        else:
            before, after = old_events[name], new_events[name]
            context = _Context(before.get("$defs") or {}, after.get("$defs") or {})
            changes.extend(context.compare(before, after, f"{name}: payload"))
            changes.extend(_compare_state(name, before, after))
    return sorted(changes, key=lambda change: not change.breaking)


def _events(document: Mapping[str, Any], which: str) -> Mapping[str, Any]:
    events = document.get("events") if isinstance(document, Mapping) else None
    if not isinstance(events, Mapping):
        raise ValueError(
            f'{which} is not a schema document {{"events": {{...}}}}: '
            "give two outputs of `livepanel schema`"
        )
    return events


@dataclasses.dataclass
class _Context:
    old_defs: Mapping[str, Any]
    new_defs: Mapping[str, Any]
    depth: int = 0

    def resolve(self, schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            found: Mapping[str, Any] = defs.get(ref.removeprefix("#/$defs/"), {})
            return found
        return schema

    def compare(
        self, old: Mapping[str, Any], new: Mapping[str, Any], where: str
    ) -> Iterator[SchemaChange]:
        if self.depth > 32:  # a nested class that contains itself
            return
        self.depth += 1
        try:
            yield from self._compare(
                self.resolve(old, self.old_defs), self.resolve(new, self.new_defs), where
            )
        finally:
            self.depth -= 1

    def _compare(
        self, old: Mapping[str, Any], new: Mapping[str, Any], where: str
    ) -> Iterator[SchemaChange]:
        old_kind, new_kind = _kind(old), _kind(new)
        if old_kind != new_kind:
            if (old_kind, new_kind) == ("integer", "number"):
                yield SchemaChange(where, "integer widened to number", breaking=True)
            elif (old_kind, new_kind) == ("number", "integer"):
                yield SchemaChange(where, "number narrowed to integer", breaking=False)
            else:
                yield SchemaChange(where, f"type changed from {old_kind} to {new_kind}", True)
            return
        if old_kind == "enum":
            yield from _compare_enum(old, new, where)
        elif old_kind == "anyOf":
            yield from self._compare_union(old, new, where)
        elif old_kind == "object":
            yield from self._compare_object(old, new, where)
        elif old_kind == "array":
            yield from self.compare(old.get("items") or {}, new.get("items") or {}, f"{where}[]")
        elif old_kind == "const" and old.get("const") != new.get("const"):
            yield SchemaChange(where, f"value changed from {old.get('const')!r}", breaking=True)
        yield from _compare_bounds(old, new, where)

    def _compare_union(
        self, old: Mapping[str, Any], new: Mapping[str, Any], where: str
    ) -> Iterator[SchemaChange]:
        before = {_kind(o): o for o in old.get("anyOf", [])}
        after = {_kind(n): n for n in new.get("anyOf", [])}
        for kind in sorted(after.keys() - before.keys()):
            yield SchemaChange(where, f"may now be {kind}", breaking=True)
        for kind in sorted(before.keys() - after.keys()):
            yield SchemaChange(where, f"is no longer {kind}", breaking=False)
        for kind in sorted(before.keys() & after.keys()):
            yield from self.compare(before[kind], after[kind], where)

    def _compare_object(
        self, old: Mapping[str, Any], new: Mapping[str, Any], where: str
    ) -> Iterator[SchemaChange]:
        old_props, new_props = old.get("properties") or {}, new.get("properties") or {}
        old_required, new_required = set(old.get("required") or ()), set(new.get("required") or ())
        removed = [k for k in old_props if k not in new_props]
        added = [k for k in new_props if k not in old_props]
        renamed: dict[str, str] = {}
        for gone in removed:  # same schema, both required: most likely a rename
            for came in added:
                if (
                    came not in renamed.values()
                    and gone in old_required
                    and came in new_required
                    and old_props[gone] == new_props[came]
                ):
                    renamed[gone] = came
                    break
        for gone, came in renamed.items():
            yield SchemaChange(f"{where}.{gone}", f"required field renamed to {came!r}", True)
        for gone in removed:
            if gone in renamed:
                continue
            required = gone in old_required
            yield SchemaChange(
                f"{where}.{gone}",
                f"{'required' if required else 'optional'} field removed",
                breaking=required,
            )
        for came in added:
            if came in renamed.values():
                continue
            required = came in new_required
            yield SchemaChange(
                f"{where}.{came}",
                f"{'required' if required else 'optional'} field added",
                breaking=required,
            )
        for key in old_props:
            if key not in new_props:
                continue
            if key in old_required and key not in new_required:
                yield SchemaChange(f"{where}.{key}", "required field made optional", True)
            elif key in new_required and key not in old_required:
                yield SchemaChange(f"{where}.{key}", "optional field made required", False)
            yield from self.compare(old_props[key], new_props[key], f"{where}.{key}")
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_extra, Mapping) and isinstance(new_extra, Mapping):
            yield from self.compare(old_extra, new_extra, f"{where}[*]")


def _compare_state(
    name: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> Iterator[SchemaChange]:
    before, after = old.get("x-livepanel-state"), new.get("x-livepanel-state")
    if before == after:
        return
    if before is None:
        yield SchemaChange(name, f"now updates the state ({after})", breaking=False)
    elif after is None:
        yield SchemaChange(name, "no longer updates the state", breaking=True)
    else:
        yield SchemaChange(name, f"state rule changed from {before} to {after}", breaking=True)


def _kind(schema: Mapping[str, Any]) -> str:
    for keyword in ("const", "enum", "anyOf"):
        if keyword in schema:
            return keyword
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    if "$ref" in schema:
        return "object"
    return "any"


def _compare_enum(
    old: Mapping[str, Any], new: Mapping[str, Any], where: str
) -> Iterator[SchemaChange]:
    before, after = list(old.get("enum") or ()), list(new.get("enum") or ())
    gone = [v for v in before if v not in after]
    came = [v for v in after if v not in before]
    if gone:
        values = ", ".join(repr(v) for v in gone)
        yield SchemaChange(where, f"literal narrowed: {values} no longer sent", breaking=True)
    if came:
        values = ", ".join(repr(v) for v in came)
        yield SchemaChange(where, f"literal widened: {values} may be sent", breaking=False)


def _compare_bounds(
    old: Mapping[str, Any], new: Mapping[str, Any], where: str
) -> Iterator[SchemaChange]:
    """``minimum`` (``NonNegative``) and ``maxLength``: a bound dropped lets values through
    that a dashboard was written never to see."""
    for keyword in ("minimum", "maxLength"):
        if keyword in old and keyword not in new:
            yield SchemaChange(where, f"{keyword} {old[keyword]} dropped", breaking=True)
        elif keyword not in old and keyword in new:
            yield SchemaChange(where, f"{keyword} {new[keyword]} added", breaking=False)
