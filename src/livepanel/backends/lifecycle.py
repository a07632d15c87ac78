"""The named states of a backend's writer and reader task, the moves between them, and what
both tasks share: the settings they read and how they wake those who wait on them.

Redis and PostgreSQL write and read the same way at this level: a writer task
that is stopped, idle, writing or backing off after a failure, and a reader
task that is stopped, reading, or reconnecting. Each backend's ``Writer`` and
``Reader`` change state only through :func:`move`, which refuses a move the
tables below do not allow.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

__all__ = [
    "READER_MOVES",
    "WRITER_MOVES",
    "BackendSettings",
    "Finish",
    "ReaderState",
    "WriterState",
    "move",
    "notify",
]


class WriterState(enum.Enum):
    """What a backend's writer task is doing.

    Example::

        >>> WriterState.BACKING_OFF.value
        'backing_off'
    """

    STOPPED = "stopped"
    """No task: events are held until the backend starts."""
    IDLE = "idle"
    """Started, and nothing waits to be written."""
    WRITING = "writing"
    """A batch is with the server."""
    BACKING_OFF = "backing_off"
    """Pausing after a failure; only a waiting ``apublish()`` (or a flush) cuts it short."""


class ReaderState(enum.Enum):
    """What a backend's reader task is doing.

    Example::

        >>> ReaderState.RECONNECTING.value
        'reconnecting'
    """

    STOPPED = "stopped"
    """No task."""
    READING = "reading"
    """Reading the stream, or waiting for news."""
    RECONNECTING = "reconnecting"
    """A read failed: pausing, then reconnecting (and resyncing) before it reads again."""


WRITER_MOVES: dict[WriterState, frozenset[WriterState]] = {
    # IDLE from STOPPED: a new task, on a new loop, replaces one whose loop has closed
    WriterState.STOPPED: frozenset({WriterState.IDLE, WriterState.STOPPED}),
    WriterState.IDLE: frozenset({WriterState.IDLE, WriterState.WRITING, WriterState.STOPPED}),
    WriterState.WRITING: frozenset(
        {WriterState.WRITING, WriterState.IDLE, WriterState.BACKING_OFF, WriterState.STOPPED}
    ),
    WriterState.BACKING_OFF: frozenset(
        {WriterState.WRITING, WriterState.IDLE, WriterState.STOPPED}
    ),
}
"""The states a writer may move to from each state."""

READER_MOVES: dict[ReaderState, frozenset[ReaderState]] = {
    ReaderState.STOPPED: frozenset({ReaderState.READING, ReaderState.STOPPED}),
    ReaderState.READING: frozenset(
        {ReaderState.READING, ReaderState.RECONNECTING, ReaderState.STOPPED}
    ),
    ReaderState.RECONNECTING: frozenset(
        {ReaderState.READING, ReaderState.RECONNECTING, ReaderState.STOPPED}
    ),
}
"""The states a reader may move to from each state."""

S = TypeVar("S", WriterState, ReaderState)


def move(moves: dict[S, frozenset[S]], current: S, new: S) -> S:
    """``new``, once ``moves`` allows going there from ``current``.

    Raises:
        AssertionError: a move the table does not allow (a bug in the task).

    Example::

        >>> move(WRITER_MOVES, WriterState.IDLE, WriterState.WRITING)
        <WriterState.WRITING: 'writing'>
    """
    assert new in moves[current], f"{type(new).__name__}: {current.value} -> {new.value}"
    return new


Finish = Callable[[asyncio.Task[None]], Awaitable[None]]
"""How a backend cancels one of its tasks and waits for it (each says a failure its own way)."""


class BackendSettings(Protocol):
    """What a backend's writer and reader read of its settings: the server in words that hold
    no password, the seconds a round trip may take, how many events may wait, how many state
    entries to keep, and the pause after some failures in a row.

    Example::

        settings: BackendSettings = PostgresSettings.check("postgresql://db/app")
    """

    @property
    def location(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def max_pending(self) -> int: ...
    @property
    def state_limit(self) -> int: ...
    def backoff(self, failures: int) -> float: ...


def notify(waiters: list[asyncio.Future[None]]) -> None:
    """Wake every waiter and forget them.

    Example::

        notify(self._idle_waiters)  # the writer has nothing left to write
    """
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()
