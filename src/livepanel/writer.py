"""The writer of one connection: every ``send`` in the connection's own task and context.

A :class:`Writer` drains a :class:`~livepanel.connection.Connection`'s outbox
to the server's ``send``. It runs as a task of the connection's own, started
from the connection's ASGI task (:meth:`Connection.start_writer
<livepanel.connection.Connection.start_writer>`), so each ``send`` sees that
task as ``asyncio.current_task()`` and that context's variables: a host
middleware's ``asyncio.timeout()`` around ``send``, or a tracing span it opens,
belongs to this connection, never to whoever published.

Waking a parked task for every event costs a future, a handle and a pass of
the event loop per connection and event, which is most of the cost per
message at a steady rate. So when the hub's round reaches a writer that is
parked, :meth:`Writer.flush` writes what queued *as* the writer's task: from
the round's loop callback, it makes the task current (the event loop's own
``_enter_task``, as ``asyncio`` does for every step of a task and Python 3.12's
eager tasks do when they start) and runs each ``send`` in the task's context.
A ``send`` that completes without waiting (the usual case: the server buffers
the frame) costs no wake at all. One that has to wait (a full socket, a
middleware that awaits) is handed over, suspended where it stopped, to the
task itself, which finishes it (:func:`resume`) before it writes anything else:
the order of frames, the task's cancellation (a timeout, an abandon) and the
exceptions are the same as if the task had started that ``send`` itself.

That needs the task's context object, which only ``create_task(context=...)``
(Python 3.11 and later) gives; on Python 3.10 every round wakes the task.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import sys
import types
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol

from livepanel.close_reason import CloseReason
from livepanel.outbox import DeliveryCounters, Frame, Outbox
from livepanel.protocol import control_frame
from livepanel.receipts import AckMark


class Writable(Protocol):
    """What a writer needs of the connection it writes (:class:`~livepanel.connection.Connection`).

    Example::

        writer = Writer(conn, counters, send_text)  # conn: a Connection
    """

    loop: asyncio.AbstractEventLoop
    outbox: Outbox
    batch: bool
    close_reason: CloseReason | None
    last_sent: float
    acks: AckMark | None
    waiter: asyncio.Future[None] | None
    """The future the writer waits on, while it waits (``None`` while it writes)."""

    def close(self, reason: CloseReason) -> None:
        """Stop queueing; the writer returns ``reason``."""

    def wake(self) -> None:
        """Wake the writer if it waits."""

    def park(self) -> asyncio.Future[None]:
        """The future the writer waits on until something is queued."""

    def unpark(self) -> None:
        """The writer stopped waiting."""

    def push_control(self, text: str) -> None:
        """Queue a frame that is not an event (a ``ping``)."""


__all__ = ["UNSTARTED", "Pump", "SendText", "Writable", "Writer", "resume", "start_task"]

logger = logging.getLogger("livepanel")

SendText = Callable[[str], Awaitable[object]]
"""Writes one text frame to the client: the transport's ``send`` of a ``websocket.send``."""
AsgiSend = Callable[[dict[str, Any]], Awaitable[object]]
"""The server's ASGI ``send`` (as the host's middleware wrapped it)."""

_Coroutine = types.CoroutineType
READY: Any = object()
"""What a writer's pump yields when the send it was given has returned."""
UNSTARTED: Any = object()
"""What a handed-over ``send`` "yielded" when it is an awaitable that is not a coroutine
(a server's own, which may not support ``send()``): the task awaits it whole."""
_Suspended = tuple[Any, Any]  # a send's coroutine (or awaitable's iterator) and what it yielded


class Writer:
    """Drains one connection's outbox to ``send``, in the connection's own task.

    Args:
        conn: the connection it writes.
        counters: the broadcaster's counters (``delivered``).
        send: writes one text frame (or one event-stream chunk, with ``encode``).
        heartbeat_interval: seconds without a frame before a ``ping`` is queued.
        encode: with it, each wake sends ``encode(frames)`` of everything queued.
        context: the context the writer's task runs in (see :mod:`livepanel.writer`);
            without it every round wakes the task.
        asgi_send: the server's ``send``, when ``send(text)`` is a ``websocket.send`` of
            ``text`` through it: a round then makes that message itself.

    Example, what :meth:`Connection.write <livepanel.connection.Connection.write>` does::

        writer = Writer(conn, counters, send_text, 25.0, context=context)
        reason = await writer.run()
    """

    __slots__ = (
        "_asgi",
        "_context",
        "_counters",
        "_encode",
        "_heartbeat",
        "_log",
        "_lone",
        "_loop",
        "_outbox",
        "_suspended",
        "_task",
        "_timer",
        "conn",
        "send",
    )

    def __init__(
        self,
        conn: Writable,
        counters: DeliveryCounters,
        send: SendText,
        heartbeat_interval: float | None = None,
        *,
        encode: Callable[[list[Frame]], str] | None = None,
        context: contextvars.Context | None = None,
        asgi_send: AsgiSend | None = None,
    ) -> None:
        self.conn = conn
        self._loop = conn.loop
        self._outbox = conn.outbox  # a connection's outbox is its own for good
        self._counters = counters
        self.send = send
        # with it, one frame is one websocket.send, made here: a call less than send(text)
        self._asgi = asgi_send if encode is None else None
        # the same, when calling it runs nothing (an async def): a round's lone frame's send
        self._lone = self._asgi if inspect.iscoroutinefunction(self._asgi) else None
        self._heartbeat = heartbeat_interval
        self._encode = encode
        # what lets a round write as this task: its context, once run() is its task's body
        self._context = context if encode is None else None
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._suspended: _Suspended | None = None  # a send begun by flush() that had to wait
        self._log = conn.acks.sent if conn.acks is not None else None  # the lag's record

    # ------------------------------------------------------------------ from the hub's round

    def flush(self, now: float, pump: Pump) -> None:
        """Write what queued as the parked writer's task, else wake it.

        Called by the hub's round (a loop callback, where no task runs), with the
        round's ``pump``. The writer is woken instead (it writes itself) when it
        has no context, is not parked, is closing, or another task is running.
        """
        task = self._task
        context = self._context
        conn = self.conn
        if task is None or context is None or conn.waiter is None or conn.close_reason is not None:
            conn.wake()
            return
        loop = self._loop
        try:
            _enter_task(loop, task)
        except RuntimeError:  # called from inside a task: the task must write itself
            conn.wake()
            return
        outbox = self._outbox
        queue = outbox.queue
        try:
            lone = self._lone
            if lone is not None and outbox.head + 1 == len(queue) and not conn.batch:
                # one frame (each round at a steady rate): its websocket.send, made here (a
                # coroutine function runs nothing when called), runs in the task's context
                frame = outbox.pop()
                sent = 0 if frame.event is None else 1
                steps = pump.steps
                try:
                    yielded = context.run(
                        steps.send, lone({"type": "websocket.send", "text": frame.text})
                    )
                except Exception as exc:
                    self._round_failed(exc, pump)
                else:
                    if yielded is not READY:
                        self._hand_over(steps, yielded, pump)
            else:
                sent = context.run(self._write_parked, pump)
        finally:
            _leave_task(loop, task)
        self._counters.delivered += sent
        conn.last_sent = now
        log = self._log
        if sent and log is not None and log.acking:  # once per write, never per event
            log.wrote(sent, outbox.newest_sent(), now)
        if self._suspended is None and conn.close_reason is None:
            if outbox.head < len(queue):  # control frames a send queued meanwhile: the task
                conn.wake()  # writes them
            else:
                outbox.parked = True  # still parked: the next event tells the hub again

    def _write_parked(self, pump: Pump) -> int:
        """:meth:`flush`'s writes when more than one frame queued; returns the events sent."""
        conn = self.conn
        outbox = self._outbox
        send = self.send
        sent = 0
        try:
            if conn.batch:
                controls = outbox.controls
                frames = outbox.take()
                sent = len(frames) - controls
                if len(frames) == 1:
                    self._begin(send(frames[0].text), pump)
                else:
                    self._begin(send(pump.joined(frames)), pump)
            else:
                asgi = self._asgi
                steps = pump.steps
                pop, queue = outbox.pop, outbox.queue
                while outbox.head < len(queue):
                    frame = pop()
                    if frame.event is not None:
                        sent += 1
                    if asgi is not None:
                        sending: Any = asgi({"type": "websocket.send", "text": frame.text})
                    else:
                        sending = send(frame.text)
                    # _begin(), inlined: once per frame
                    if type(sending) is _Coroutine:
                        yielded = steps.send(sending)
                        if yielded is READY:
                            continue
                        self._hand_over(steps, yielded, pump)
                    else:
                        self._hand_over(sending, UNSTARTED, pump)
                    break  # the task finishes that send, then writes the rest
        except Exception as exc:
            self._round_failed(exc, pump)
        return sent

    def _begin(self, sending: Awaitable[object], pump: Pump) -> None:
        """Start ``sending`` in the round's ``pump``; hand it to the task if it has to wait."""
        if type(sending) is _Coroutine:
            steps = pump.steps
            yielded = steps.send(sending)
            if yielded is not READY:
                self._hand_over(steps, yielded, pump)
        else:
            self._hand_over(sending, UNSTARTED, pump)

    def _hand_over(self, sending: Any, yielded: Any, pump: Pump) -> None:
        """A send a round began has to wait: the writer's task finishes it (:func:`resume`)
        before it writes anything else. ``sending`` is the pump's generator, which keeps the
        send (the round goes on with a new one), or with ``yielded`` :data:`UNSTARTED` an
        awaitable that is not a coroutine (a server's own), which the task awaits whole."""
        if yielded is not UNSTARTED:
            pump.steps = _pump()
        self._suspended = (sending, yielded)
        self.conn.wake()

    def _round_failed(self, exc: Exception, pump: Pump) -> None:
        """A send a round began raised: the pump's generator ended with it; close alone."""
        pump.steps = _pump()
        self.conn.close(self._failed(exc))

    # ------------------------------------------------------------------ the task

    async def run(self) -> CloseReason:
        """Drain the queue to ``send`` until the connection closes; return why it closed.

        Wakes at most once per event-loop turn and writes everything queued
        meanwhile (one frame each, or one newline-delimited frame with
        ``batch``). After ``heartbeat_interval`` seconds without a frame it
        queues ``ping``. A write that fails with ``OSError`` means the client
        left; any other exception is logged and ends this connection alone
        with ``INTERNAL_ERROR``.
        """
        conn = self.conn
        loop = conn.loop
        self._task = asyncio.current_task()
        if self._heartbeat is not None:
            self._timer = loop.call_later(self._heartbeat, self._beat)
        counters = self._counters
        outbox = conn.outbox
        pop, queue = outbox.pop, outbox.queue
        send = self.send
        encode = self._encode
        try:
            while True:
                while not outbox and conn.close_reason is None and self._suspended is None:
                    waiter = conn.park()
                    try:
                        await waiter
                    except BaseException as exc:  # cancelled: a send flush() began gets it
                        if self._suspended is None:
                            raise
                        await resume(*self._take_suspended(), thrown=exc)
                    finally:
                        conn.unpark()
                if self._suspended is not None:
                    await resume(*self._take_suspended())
                    continue
                reason = conn.close_reason
                if reason is not None and not (reason.flushes_first and outbox):
                    return reason
                if encode is not None or conn.batch:
                    controls = outbox.controls
                    frames = outbox.take()
                    if encode is not None:
                        await send(encode(frames))
                    elif len(frames) == 1:
                        await send(frames[0].text)
                    else:
                        await send("\n".join([f.text for f in frames]))
                    sent = len(frames) - controls
                    counters.delivered += sent
                else:
                    sent = 0
                    while outbox.head < len(queue):
                        if conn.close_reason is not None and not conn.close_reason.flushes_first:
                            break
                        frame = pop()
                        if frame.event is not None:
                            sent += 1
                        await send(frame.text)
                    counters.delivered += sent
                now = conn.last_sent = loop.time()
                log = self._log
                if sent and log is not None and log.acking:  # once per write, not per event
                    log.wrote(sent, outbox.newest_sent(), now)
        except Exception as exc:
            reason = self._failed(exc)
            conn.close(reason)
            return reason
        finally:
            self._task = self._context = None
            if self._timer is not None:
                self._timer.cancel()

    def _take_suspended(self) -> _Suspended:
        suspended = self._suspended
        assert suspended is not None
        self._suspended = None
        return suspended

    def _beat(self) -> None:
        interval = self._heartbeat
        assert interval is not None
        conn = self.conn
        idle = conn.loop.time() - conn.last_sent
        if idle >= interval - 0.01:
            conn.push_control(control_frame("ping", {}))
            self._timer = conn.loop.call_later(interval, self._beat)
        else:
            self._timer = conn.loop.call_later(interval - idle, self._beat)

    @staticmethod
    def _failed(exc: Exception) -> CloseReason:
        if isinstance(exc, OSError):
            return CloseReason.CLIENT_LEFT
        logger.error(
            "livepanel: writing to a connection failed (%s); closing it with 1011",
            type(exc).__name__,
        )
        return CloseReason.INTERNAL_ERROR


@types.coroutine
def resume(
    steps: Any, yielded: Any, *, thrown: BaseException | None = None
) -> Generator[Any, Any, Any]:
    """Finish, in the awaiting task, a ``send`` that began elsewhere and had to wait.

    ``steps`` is the suspended coroutine (or an awaitable's iterator) and
    ``yielded`` what it yielded when it stopped; the task waits on that, sends
    the results in and throws its exceptions (a cancellation) in, as if it had
    awaited the ``send`` from the start. With ``thrown``, that exception goes in
    first (the task was cancelled before it took the ``send`` over). With ``yielded``
    :data:`UNSTARTED`, ``steps`` is an awaitable nobody began: it is awaited as it is.

    Example::

        await resume(steps, yielded)  # returns what the send returns
    """
    if yielded is UNSTARTED:
        if thrown is not None:
            raise thrown  # it never began: the cancellation is the task's own
        return (yield from steps.__await__())
    if thrown is not None:
        try:
            yielded = steps.throw(thrown)
        except StopIteration as stop:
            return stop.value
    while yielded is not READY:  # a writer's pump is done with a send when it says so
        try:
            value = yield yielded
        except BaseException as exc:
            try:
                yielded = steps.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = steps.send(value)
            except StopIteration as stop:
                return stop.value
    return None


def _pump() -> Generator[Any, Any, None]:
    """A new pump's steps, started: ready for its first send."""
    steps = _steps()
    steps.send(None)
    return steps


@types.coroutine
def _steps() -> Generator[Any, Any, None]:
    while True:
        sending = yield READY
        yield from sending


class Pump:
    """Runs the sends a hub's round begins, each to its end or to its first wait.

    Its generator yields :data:`READY` once a send returned (no ``StopIteration``
    per send, which costs more than the send's own bookkeeping), or what the
    send waits on. One serves every writer of a round (one per event loop: no
    generator per connection); a send that has to wait keeps the generator it
    runs in (the writer's task drives it on through :func:`resume` until it is
    ``READY``), and the round goes on with a new one.

    It also keeps the last batch it joined (:meth:`joined`): batching writers
    with the same filter queue the same frames, and join them once per round.

    Example, what a round does::

        pump = Pump()
        writer.flush(loop.time(), pump)
        pump.forget()  # the round is over
    """

    __slots__ = ("_frames", "_text", "steps")

    def __init__(self) -> None:
        self.steps = _pump()
        self._frames: list[Frame] = []
        self._text = ""

    def joined(self, frames: list[Frame]) -> str:
        """The frames' texts joined by newlines (a ``?batch=1`` frame): made once for every
        writer of the round that queued the same frames (compared by identity, in C)."""
        if frames != self._frames:
            self._frames = frames
            self._text = "\n".join([frame.text for frame in frames])
        return self._text

    def forget(self) -> None:
        """Let go of the last batch (the round is over)."""
        self._frames = []
        self._text = ""


def start_task(
    loop: asyncio.AbstractEventLoop, writing: Coroutine[Any, Any, Any]
) -> tuple[asyncio.Task[Any], contextvars.Context | None]:
    """Run ``writing`` in a task of its own, with a copy of the current context that
    the caller keeps (``None`` on Python 3.10, where ``create_task`` takes no context).

    Example::

        task, context = start_task(loop, conn.write(send_text))
    """
    if sys.version_info < (3, 11):
        return loop.create_task(writing), None
    context = contextvars.copy_context()
    return loop.create_task(writing, context=context), context
