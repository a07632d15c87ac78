"""Type filters: which event types a connection wants, as shell-style globs (``"session.*"``).

:func:`type_globs` reads globs as Python callers give them and
:func:`check_globs` as the wire carries them, with the same limits;
:class:`TypeFilter` matches event types against them in linear time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "MAX_GLOBS",
    "MAX_GLOB_LENGTH",
    "SHARED_FILTERS",
    "TypeFilter",
    "check_globs",
    "shared_filter",
    "type_globs",
]

MAX_GLOBS = 32
"""Most type globs one ``subscribe`` (or ``?types=``) may hold."""
MAX_GLOB_LENGTH = 128
"""Most characters of one type glob."""

SHARED_FILTERS = 256
"""Distinct glob lists whose filter is kept for every connection that subscribes alike."""

_GLOB = re.compile(r"[A-Za-z0-9_.*?-]+")


class TypeFilter:
    """Which event types a connection wants, as shell-style globs (``"session.*"``).

    ``*`` stands for any run of characters (none included), ``?`` for one
    character, anything else for itself. Matching takes time linear in the
    type's length whatever the globs (a bit-parallel automaton, never a
    backtracking regex), so no subscription can stall the server.

    Example::

        >>> TypeFilter(["session.*"]).matches("session.created")
        True
        >>> TypeFilter(["*?" * 11 + "Z"]).matches("a" * 31)
        False
    """

    __slots__ = (
        "_accept",
        "_any",
        "_cache",
        "_classes",
        "_exact",
        "_stars",
        "_start",
        "everything",
        "globs",
    )

    def __init__(self, globs: Iterable[str] = ("*",)) -> None:
        self.globs = tuple(globs)
        self.everything = "*" in self.globs
        self._cache: dict[str, bool] = {}
        self._exact = frozenset(g for g in self.globs if "*" not in g and "?" not in g)
        # One automaton for every glob with a wildcard: bit j of a glob's range means "its
        # first j tokens are matched"; the bit after its last token is its accepting bit.
        self._classes: dict[str, int] = {}  # character -> bits of tokens it satisfies
        self._any = 0  # bits of "?" tokens (satisfied by every character)
        self._stars = 0  # bits of "*" tokens (a loop on any character, or skipped)
        self._start = 0
        self._accept = 0
        bit = 0
        for glob in self.globs:
            if glob in self._exact:
                continue
            tokens = re.sub(r"\*+", "*", glob)  # a run of stars is one star
            self._start |= 1 << bit
            for token in tokens:
                if token == "*":
                    self._stars |= 1 << bit
                elif token == "?":
                    self._any |= 1 << bit
                else:
                    self._classes[token] = self._classes.get(token, 0) | 1 << bit
                bit += 1
            self._accept |= 1 << bit
            bit += 1

    def matches(self, kind: str) -> bool:
        """Whether events of type ``kind`` pass the filter."""
        if self.everything:
            return True
        hit = self._cache.get(kind)
        if hit is None:
            hit = kind in self._exact or self._run(kind)
            if len(self._cache) < 1024:  # bounded: types come from a registry, not from clients
                self._cache[kind] = hit
        return hit

    def _run(self, kind: str) -> bool:
        """Feed ``kind`` through the automaton: a handful of integer operations per character."""
        state = self._start
        if not state:
            return False
        stars, any_char, classes = self._stars, self._any, self._classes
        state |= (state & stars) << 1  # a star may match nothing (runs are collapsed: one step)
        for char in kind:
            state = ((state & (classes.get(char, 0) | any_char)) << 1) | (state & stars)
            if not state:
                return False
            state |= (state & stars) << 1
        return bool(state & self._accept)

    def __repr__(self) -> str:
        return f"TypeFilter({list(self.globs)!r})"


_shared: dict[tuple[str, ...], TypeFilter] = {}


def shared_filter(globs: Iterable[str] = ("*",)) -> TypeFilter:
    """The :class:`TypeFilter` of ``globs``, one for every connection that subscribes alike.

    Dashboards mostly subscribe to the same few lists of types; a filter (its
    automaton and its cache) costs about half a kilobyte, so connections share
    it. A filter is never changed once built (its cache only remembers answers),
    so sharing it across connections and threads is safe. The first
    :data:`SHARED_FILTERS` distinct lists are kept; a client that sends ever new
    ones (an attacker) gets a filter of its own each time, as before.

    Example::

        >>> shared_filter(["session.*"]) is shared_filter(["session.*"])
        True
    """
    key = tuple(globs)
    found = _shared.get(key)
    if found is None:
        found = TypeFilter(key)
        if len(_shared) < SHARED_FILTERS:
            _shared[key] = found
    return found


def check_globs(value: Any) -> tuple[str, ...]:
    """Type globs as the wire carries them (``payload.types``, ``?types=``): a list of strings.

    Raises:
        ValueError: not a list, too many globs, or a glob that breaks the rules.

    Example::

        >>> check_globs(["session.*"])
        ('session.*',)
    """
    if not isinstance(value, list):
        raise ValueError("payload.types must be a list of type globs like 'session.*'")
    if len(value) > MAX_GLOBS:
        raise ValueError(f"payload.types holds at most {MAX_GLOBS} globs")
    for glob in value:
        if not isinstance(glob, str) or not glob or len(glob) > MAX_GLOB_LENGTH:
            raise ValueError(f"each type glob is a string of 1 to {MAX_GLOB_LENGTH} characters")
        if not _GLOB.fullmatch(glob):
            raise ValueError("type globs use letters, digits, '.', '_', '-', '*' and '?' only")
    return tuple(value)


def type_globs(types: str | Iterable[str]) -> tuple[str, ...]:
    """Type globs as Python callers give them: a list, or one comma-separated string.

    The same rules as on the wire apply (see ``MAX_GLOBS``, ``MAX_GLOB_LENGTH``).

    Raises:
        ValueError: no glob, or a glob that breaks the rules.

    Example::

        >>> type_globs("session.*, cron.*")
        ('session.*', 'cron.*')
        >>> type_globs(["agent.status"])
        ('agent.status',)
    """
    if isinstance(types, str):
        items: list[Any] = types.split(",")
    else:
        items = list(types)
    globs = [g.strip() if isinstance(g, str) else g for g in items]
    globs = [g for g in globs if g != ""]
    if not globs:
        raise ValueError("types must name at least one type glob, e.g. ['session.*']")
    return check_globs(globs)
