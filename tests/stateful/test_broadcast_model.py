"""Random interleavings of publish, connect, subscribe, disconnect, resume, slow readers and
history overflow, checked against a model of the contract, without sockets.

Broadcaster, Connection and ClientProtocol run in one event loop. A connection is
the real :class:`~livepanel.connection.Connection`, opened with
``Broadcaster.connection()`` and drained by its own writer (``Connection.write``)
into a socket that takes as many frames as the dashboard reads; a dashboard is modelled
the way livepanel's clients behave: it remembers the last event id it processed
(``welcome.lastEventId`` before the first) and reconnects with ``since`` = that id.

The invariant: each dashboard processes every event matching its filter exactly
once and in order, except where it is told ``resume_unavailable`` (then it goes on
from the new connection's ``welcome``) — never a silent gap, never a duplicate. A
connection is closed with 1013 only when ``queue_size`` frames wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from livepanel import Broadcaster, Event, MemoryBackend
from livepanel.connection import CloseReason, Connection
from livepanel.protocol import (
    ClientProtocol,
    Reply,
    Subscribe,
    parse_connect_query,
    parse_id,
    welcome_frame,
)

HISTORY = 6
QUEUE_SIZE = 4
CLIENTS = 3
TYPES = ("session.created", "session.killed", "agent.status")
GLOBS = ("*", "session.*", "agent.*", "session.killed", "*.status", "nothing.*", "session.?illed")
PAYLOADS: dict[str, Callable[[int], dict[str, Any]]] = {
    "session.created": lambda n: {"sessionKey": f"s{n}", "agentId": "a1", "kind": "direct"},
    "session.killed": lambda n: {"sessionKey": f"s{n}", "agentId": "a1"},
    "agent.status": lambda n: {"agentId": "a1", "status": "idle", "activeSessionCount": n},
}

filters = st.lists(st.sampled_from(GLOBS), min_size=1, max_size=3, unique=True)


@dataclass(frozen=True)
class Expected:
    """A frame a dashboard must read next: an event (replayed or live) or an error."""

    kind: str  # "event" or "error"
    value: str  # the event id, or the error code
    live: bool = False  # a live event, which counts against queue_size (a replay does not)


RESUME_UNAVAILABLE = Expected("error", "resume_unavailable")


class RacingMemory(MemoryBackend):
    """A memory backend whose replay lets events be published just before and just after
    it reads the history, as other threads and the network do to a real replay."""

    before: Callable[[], None] | None = None
    after: Callable[[], None] | None = None

    async def replay(self, since: str) -> list[Event] | None:
        await asyncio.sleep(0)
        hook, self.before = self.before, None
        if hook is not None:
            hook()
        events = await super().replay(since)
        hook, self.after = self.after, None
        if hook is not None:
            hook()
        await asyncio.sleep(0)
        return events


@dataclass
class Dashboard:
    """The model of one client: what it has processed and what it must read next."""

    globs: list[str] = field(default_factory=lambda: ["*"])
    sub: Connection | None = None  # the open connection, if any
    stack: contextlib.AsyncExitStack | None = None  # closes it
    writer: asyncio.Task[CloseReason] | None = None  # its writer, in a task of its own
    credits: int = 0  # writes its socket takes before the writer has to wait
    gate: asyncio.Future[None] | None = None  # the writer waits here for credits
    inflight: str | None = None  # the write waiting there: sent, not yet read
    protocol: ClientProtocol | None = None
    welcome_id: str | None = None  # this connection's welcome.lastEventId
    welcomed: bool = False
    position: str | None = None  # the id it resumes from
    expected: deque[Expected] = field(default_factory=deque)
    processed: list[str] = field(default_factory=list)
    # indexes of processed where the answer to a subscribe with since begins: the frames
    # already on the wire came before it, so its replay may go back behind them (in order
    # among itself, never repeating them: SPEC, subscribe)
    segments: list[int] = field(default_factory=list)
    gaps: int = 0

    def wants(self, kind: str) -> bool:
        return any(fnmatch.fnmatchcase(kind, glob) for glob in self.globs)

    def live_waiting(self) -> int:
        return sum(1 for item in self.expected if item.live)


class BroadcastModel(RuleBasedStateMachine):
    """One broadcaster on a memory backend, three dashboards, and the contract as a model."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.serial = 0
        self.epochs = 0
        self.broadcaster = self._new_broadcaster()
        self.dashboards = [Dashboard() for _ in range(CLIENTS)]
        self.failures: list[AssertionError] = []  # what the model found inside a writer

    # ------------------------------------------------------------------ the model

    def _new_broadcaster(self) -> Broadcaster:
        self.backend = RacingMemory(history=HISTORY)
        broadcaster = Broadcaster(self.backend, history=HISTORY, queue_size=QUEUE_SIZE)
        self.loop.run_until_complete(broadcaster.start())
        self.published: list[tuple[str, str]] = []  # (id, type) in this epoch, in order
        self.epochs += 1
        return broadcaster

    def _publish(self, kind: str, *, resuming: Dashboard | None = None) -> None:
        """Publish; every open connection whose filter matches must get it live."""
        self.serial += 1
        event = self.broadcaster.publish(kind, PAYLOADS[kind](self.serial))
        assert event.id is not None  # the memory backend assigns ids at once
        self.published.append((event.id, kind))
        for dash in self.dashboards:
            sub = dash.sub
            if dash is resuming or sub is None or sub.closed:
                continue  # (a resuming dashboard's expectation is settled when it resumes)
            if dash.wants(kind):
                dash.expected.append(Expected("event", event.id, live=True))

    def _retained_after(self, since: str, published: list[tuple[str, str]]) -> bool:
        """Whether the contract resumes from ``since``: it names the newest event, the
        start of an epoch whose history is whole, or an event still retained."""
        epoch, position = parse_id(since)
        if epoch != self.backend.epoch or len(position) != 1:
            return False
        seq, total = position[0], len(published)
        first = max(1, total - HISTORY + 1)  # the oldest retained sequence number
        if seq == total:
            return True
        if seq == 0:
            return first == 1
        return first <= seq < total

    def _events_after(
        self, dash: Dashboard, start: int, stop: int | None = None, *, live: bool
    ) -> list[Expected]:
        """The events ``dash`` wants among ``published[start:stop]``."""
        return [
            Expected("event", event_id, live)
            for event_id, kind in self.published[start:stop]
            if dash.wants(kind)
        ]

    def _settle_closes(self) -> None:
        """A connection closed as a slow consumer (1013) sends nothing more: its dashboard
        must resume. It is closed only when queue_size live events wait in its queue, and
        never holds more. (Welcome, pongs and replayed events do not count, see
        test_queue_size.py.)"""
        if self.failures:
            raise self.failures[0]
        for dash in self.dashboards:
            sub = dash.sub
            if sub is None:
                continue
            if not sub.closed:
                waiting = dash.live_waiting() - sum(e.live for e in self._inflight(dash))
                assert waiting <= QUEUE_SIZE, "more live events wait than queue_size"
                continue
            assert sub.close_reason is CloseReason.SLOW_CONSUMER, sub.close_reason
            assert sub.outbox.live_count >= QUEUE_SIZE, "closed as slow with room in its queue"
            event("a slow connection closed with 1013")
            self._drop(dash)

    def _drop(self, dash: Dashboard) -> None:
        if dash.writer is not None:
            dash.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                self.loop.run_until_complete(dash.writer)
        if dash.stack is not None:
            self.loop.run_until_complete(dash.stack.aclose())
        dash.sub = dash.protocol = dash.stack = dash.writer = dash.gate = dash.inflight = None
        dash.expected.clear()

    @staticmethod
    def _inflight(dash: Dashboard) -> list[Expected]:
        """The events of the write waiting in ``dash``'s socket (sent, not yet read)."""
        if dash.inflight is None:
            return []
        ids = [json.loads(line)["id"] for line in dash.inflight.split("\n") if '"id":' in line]
        known = {e.value: e for e in dash.expected if e.kind == "event"}
        return [known.get(i, Expected("event", i)) for i in ids]

    def _start_writer(self, dash: Dashboard, conn: Connection) -> None:
        """Run the connection's own writer into a socket that takes ``credits`` writes."""

        async def send(text: str) -> None:
            while dash.credits <= 0:  # the socket is full until the dashboard reads
                dash.inflight = text
                dash.gate = self.loop.create_future()
                await dash.gate
            dash.inflight = None
            dash.credits -= 1
            try:
                for line in text.split("\n"):
                    self._process(dash, json.loads(line))
            except AssertionError as exc:  # the writer would log it: the model must fail
                self.failures.append(exc)
                raise

        dash.credits = 0
        dash.writer = self.loop.create_task(conn.write(send))

    def _run_writers(self) -> None:
        """Let the writers run until each waits: for a socket, for frames, or is done."""

        def idle(dash: Dashboard) -> bool:
            conn = dash.sub
            if conn is None or dash.writer is None or dash.writer.done():
                return True
            waiting_socket = dash.gate is not None and not dash.gate.done()
            return waiting_socket or (not conn.outbox and not conn.closed)

        async def settle() -> None:
            for turn in range(2000):  # a batching writer lingers (microseconds here)
                await asyncio.sleep(0 if turn < 100 else 0.0002)
                if all(idle(dash) for dash in self.dashboards):
                    return
            raise AssertionError("the writers did not settle")

        self.loop.run_until_complete(settle())
        if self.failures:
            raise self.failures[0]

    def _racing(self, dash: Dashboard, before: int, after: int) -> list[int]:
        """Let ``before`` events be published just before the replay reads the history and
        ``after`` just after; returns a cell that receives the history's length as read."""
        snapshot: list[int] = []

        def publish(n: int) -> None:
            for _ in range(n):
                self._publish(TYPES[self.serial % len(TYPES)], resuming=dash)

        def before_read() -> None:
            publish(before)
            snapshot.append(len(self.published))

        self.backend.before = before_read
        self.backend.after = lambda: publish(after)
        return snapshot

    # ------------------------------------------------------------------ rules

    @rule(kind=st.sampled_from(TYPES), count=st.integers(1, 3))
    def publish(self, kind: str, count: int) -> None:
        """The application publishes ``count`` events."""
        for _ in range(count):
            self._publish(kind)
        self._settle_closes()

    @rule(
        index=st.integers(0, CLIENTS - 1),
        globs=filters,
        before=st.integers(0, 2),
        after=st.integers(0, 2),
        batch=st.booleans(),
    )
    def connect(self, index: int, globs: list[str], before: int, after: int, batch: bool) -> None:
        """A dashboard (re)connects, with ``?types=`` and, once it has a position, ``since``,
        while events are published around its replay."""
        dash = self.dashboards[index]
        self._drop(dash)  # a dashboard still connected noticed its connection died
        since = dash.position
        query = "types=" + ",".join(globs) + (f"&since={since}" if since else "")
        options = parse_connect_query(query)
        assert options.error is None
        assert options.subscribe is not None
        dash.globs = list(globs)
        # what the endpoint does on accept: open, welcome, the URL's subscribe, the writer
        stack = contextlib.AsyncExitStack()
        sub = self.loop.run_until_complete(
            stack.enter_async_context(self.broadcaster.connection(batch=batch))
        )
        head = sub.last_event_id
        assert self._retained_after(head, self.published), "welcome.lastEventId must resume"
        sub.push_control(welcome_frame(f"c{self.serial}", 25.0, head))
        dash.sub, dash.stack, dash.protocol = sub, stack, ClientProtocol(client_rate=None)
        dash.welcome_id, dash.welcomed = head, False
        attached = len(self.published)
        snapshot = self._racing(dash, before, after)
        try:
            self.loop.run_until_complete(sub.subscribe(options.subscribe.types, since))
        finally:
            self.backend.before = self.backend.after = None
        if since is None:
            dash.expected = deque(self._events_after(dash, attached, live=True))
        elif self._retained_after(since, self.published[: snapshot[0]]):
            # the replay: what was retained after since when it was read; then live
            start, read = parse_id(since)[1][0], snapshot[0]
            event("resumed" + (" while events raced the replay" if before or after else ""))
            dash.expected = deque(self._events_after(dash, start, read, live=False))
            dash.expected.extend(self._events_after(dash, read, live=True))
        else:
            event("resume refused" + (" while events raced it" if before or after else ""))
            dash.expected = deque(
                [RESUME_UNAVAILABLE, *self._events_after(dash, attached, live=True)]
            )
        self._settle_closes()
        if dash.sub is not None:
            self._start_writer(dash, sub)

    @rule(index=st.integers(0, CLIENTS - 1), globs=st.lists(st.sampled_from(GLOBS), max_size=3))
    def subscribe(self, index: int, globs: list[str]) -> None:
        """A connected dashboard replaces its filter, without since: it applies from now on."""
        dash = self.dashboards[index]
        if dash.sub is None or dash.protocol is None:
            return
        message = json.dumps({"type": "subscribe", "payload": {"types": globs}})
        (action,) = dash.protocol.receive_text(message)
        assert isinstance(action, Subscribe)
        assert action.since is None
        self.loop.run_until_complete(dash.sub.subscribe(action.types, None))
        dash.globs = list(globs)

    @rule(index=st.integers(0, CLIENTS - 1), globs=filters)
    def subscribe_since(self, index: int, globs: list[str]) -> None:
        """A connected dashboard asks for a replay after its position, with a new filter."""
        dash = self.dashboards[index]
        if dash.sub is None or dash.protocol is None or not dash.welcomed:
            return
        if RESUME_UNAVAILABLE in dash.expected:
            return  # it has yet to read that its position is gone
        since = dash.position
        assert since is not None
        message = {"type": "subscribe", "payload": {"types": globs, "since": since}}
        (action,) = dash.protocol.receive_text(json.dumps(message))
        assert isinstance(action, Subscribe)
        assert action.since == since
        pending = list(dash.expected)
        dash.globs = list(globs)
        self.loop.run_until_complete(dash.sub.subscribe(action.types, since))
        event("subscribe with since")
        # a write already handed to the socket arrives first, and is not replayed again
        inflight = self._inflight(dash)
        if self._retained_after(since, self.published):
            start = parse_id(since)[1][0]
            if inflight:
                event("subscribe with since while a write is in flight")
            on_the_way = {e.value for e in inflight}
            rest = [
                e for e in self._events_after(dash, start, live=False) if e.value not in on_the_way
            ]
            dash.expected = deque([*inflight, *rest])
            dash.segments.append(len(dash.processed) + len(inflight))
        else:  # what was queued stays queued, behind the error
            dash.expected = deque([*inflight, RESUME_UNAVAILABLE, *pending[len(inflight) :]])
        self._settle_closes()

    @rule(index=st.integers(0, CLIENTS - 1))
    def ping(self, index: int) -> None:
        """A client ping is answered at once with a pong, queued like any frame."""
        dash = self.dashboards[index]
        if dash.sub is None or dash.protocol is None:
            return
        (action,) = dash.protocol.receive_text('{"type": "ping", "payload": {"n": 1}}')
        assert isinstance(action, Reply)
        dash.sub.push_control(action.text)

    @rule(index=st.integers(0, CLIENTS - 1), limit=st.integers(1, 8))
    def read(self, index: int, limit: int) -> None:
        """The dashboard reads: its socket takes ``limit`` more writes from the writer."""
        dash = self.dashboards[index]
        if dash.sub is None:
            return
        dash.credits = limit
        if dash.gate is not None and not dash.gate.done():
            dash.gate.set_result(None)
        self._run_writers()
        dash.credits = 0  # the socket is full again: the writer waits at its next write

    def _process(self, dash: Dashboard, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "welcome":
            assert not dash.welcomed, "a second welcome on one connection"
            assert frame["payload"]["lastEventId"] == dash.welcome_id
            dash.welcomed = True
            if dash.position is None:
                dash.position = dash.welcome_id
            return
        assert dash.welcomed, f"{kind} before welcome"
        if kind == "pong":
            return
        if kind == "error":
            code = frame["payload"]["code"]
            assert dash.expected, f"an unexpected error {code}"
            assert dash.expected.popleft() == RESUME_UNAVAILABLE, f"unexpected {code}"
            assert code == "resume_unavailable"
            dash.gaps += 1
            dash.position = dash.welcome_id  # it goes on from this connection's start
            return
        event_id = frame["id"]
        assert dash.expected, f"event {event_id} was not expected (a duplicate?)"
        want = dash.expected.popleft()
        assert (want.kind, want.value) == ("event", event_id), f"got {event_id}, expected {want}"
        dash.processed.append(event_id)
        if dash.position is not None and parse_id(dash.position)[0] == parse_id(event_id)[0]:
            # resume from the newest: a replay may have gone back behind a frame on the wire
            event_id = max(dash.position, event_id, key=lambda i: parse_id(i)[1])
        dash.position = event_id

    @rule(index=st.integers(0, CLIENTS - 1))
    def disconnect(self, index: int) -> None:
        """The dashboard goes away (a closed tab, a lost network) and keeps its position."""
        self._drop(self.dashboards[index])

    @precondition(lambda self: self.epochs < 3)
    @rule()
    def restart(self) -> None:
        """The server restarts: every connection closes with 1001; history and epoch are new."""
        subs = [d.sub for d in self.dashboards if d.sub is not None]
        self.loop.run_until_complete(self.broadcaster.close())
        reasons = (CloseReason.GOING_AWAY, CloseReason.SLOW_CONSUMER)
        assert all(sub.close_reason in reasons for sub in subs)
        for dash in self.dashboards:
            self._drop(dash)
        self.broadcaster = self._new_broadcaster()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def processed_events_are_in_order_and_never_repeated(self) -> None:
        for dash in self.dashboards:
            assert len(set(dash.processed)) == len(dash.processed), f"repeated: {dash.processed}"
            newest: dict[str, tuple[int, ...]] = {}
            for index, event_id in enumerate(dash.processed):
                if index in dash.segments:
                    newest.clear()
                epoch, position = parse_id(event_id)
                assert epoch not in newest or position > newest[epoch], f"{event_id} out of order"
                newest[epoch] = position

    def teardown(self) -> None:
        try:
            for dash in self.dashboards:
                self._drop(dash)
            self.loop.run_until_complete(self.broadcaster.close())
        finally:
            self.loop.close()


BroadcastModel.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBroadcastModel = BroadcastModel.TestCase
