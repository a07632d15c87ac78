"""The named states of a backend's writer and reader task, and the moves between them.

Redis and PostgreSQL write and read the same way at this level: a writer task
that is stopped, idle, writing or backing off after a failure, and a reader
task that is stopped, reading, or reconnecting. Each backend's ``Writer`` and
``Reader`` change state only through :func:`move`, which refuses a move the
tables below do not allow.
"""

from __future__ import annotations

import enum
from typing import TypeVar

__all__ = ["READER_MOVES", "WRITER_MOVES", "ReaderState", "WriterState", "move"]


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
