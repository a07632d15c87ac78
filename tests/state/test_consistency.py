"""The state frame plus the live events that follow fold to the state of the whole stream.

Random interleavings of publishes (some racing the state read), connects with and
without ``since``, disconnects and new epochs, against a real Broadcaster and
real Connections on one event loop, without sockets. A dashboard keeps its own
fold (the way livepanel's clients do): reset to the ``state`` frame, then every
event applied in order; it reconnects with ``since`` = the last id it processed
and always asks for ``state``. The invariant: its fold equals the server's, it
applied no event twice and skipped none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from livepanel import Broadcaster, Event, MemoryBackend
from livepanel.connection import Connection
from livepanel.protocol import TypeFilter, parse_id
from livepanel.state import StateFold, StateSnapshot

HISTORY = 5
CLIENTS = 3
# whole collections only: a filter letting half a collection's types through sees half a fold
GLOBS = ("*", "session.*", "agent.*", "cron.*", "gateway.*")
PAYLOADS: dict[str, Callable[[int], dict[str, Any]]] = {
    "session.created": lambda n: {"sessionKey": f"s{n % 4}", "agentId": "a1", "kind": "direct"},
    "session.killed": lambda n: {"sessionKey": f"s{n % 4}", "agentId": "a1"},
    "agent.status": lambda n: {"agentId": f"a{n % 3}", "status": "idle", "activeSessionCount": n},
    "cron.executed": lambda n: {"jobId": "j", "command": "c", "exitCode": 0, "durationMs": n},
    "gateway.status": lambda n: {"status": "running", "version": "1", "uptime": float(n)},
}
TYPES = tuple(PAYLOADS)


class RacingMemory(MemoryBackend):
    """A memory backend whose state read lets events be published just before and just
    after it, as other threads and the network do to a real read."""

    before: Callable[[], None] | None = None
    after: Callable[[], None] | None = None

    async def state(self) -> StateSnapshot:
        await asyncio.sleep(0)
        hook, self.before = self.before, None
        if hook is not None:
            hook()
        snapshot = await super().state()
        hook, self.after = self.after, None
        if hook is not None:
            hook()
        await asyncio.sleep(0)
        return snapshot


def fold_view(snapshot: StateSnapshot, globs: list[str]) -> dict[str, list[str | None]]:
    """The collections a filter sees, as lists of ids."""
    wanted = TypeFilter(globs)
    names = {r.collection for kind, r in snapshot.rules.items() if wanted.matches(kind)}
    return {name: [e.id for e in snapshot.collections[name]] for name in sorted(names)}


@dataclass
class Dashboard:
    """One client: its own fold, the ids it applied, and its open connection."""

    globs: list[str]
    fold: StateFold | None = None
    position: str | None = None  # the last id it processed: its since
    applied: list[str] = field(default_factory=list)  # event ids applied since its last state
    conn: Connection | None = None
    stack: contextlib.AsyncExitStack | None = None


class StateModel(RuleBasedStateMachine):
    """One broadcaster on a memory backend, three dashboards that always ask for state."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.serial = 0
        self.broadcaster = self._new_broadcaster()
        self.dashboards: list[Dashboard] = []

    def _new_broadcaster(self) -> Broadcaster:
        self.backend = RacingMemory(history=HISTORY)
        broadcaster = Broadcaster(self.backend, queue_size=10_000)
        self.loop.run_until_complete(broadcaster.start())
        self.stream: list[Event] = []  # this epoch's events, in order
        return broadcaster

    def _publish(self, kind: str) -> None:
        self.serial += 1
        self.stream.append(self.broadcaster.publish(kind, PAYLOADS[kind](self.serial)))

    # ------------------------------------------------------------------ rules

    @rule(kind=st.sampled_from(TYPES))
    def publish(self, kind: str) -> None:
        self._publish(kind)

    @rule(
        globs=st.lists(st.sampled_from(GLOBS), min_size=1, max_size=2, unique=True),
        before=st.lists(st.sampled_from(TYPES), max_size=2),
        after=st.lists(st.sampled_from(TYPES), max_size=2),
    )
    def new_dashboard(self, globs: list[str], before: list[str], after: list[str]) -> None:
        if len(self.dashboards) < CLIENTS:
            dash = Dashboard(globs)
            self.dashboards.append(dash)
            self._connect(dash, before, after)

    @rule(
        index=st.integers(0, CLIENTS - 1),
        before=st.lists(st.sampled_from(TYPES), max_size=2),
        after=st.lists(st.sampled_from(TYPES), max_size=2),
    )
    def reconnect(self, index: int, before: list[str], after: list[str]) -> None:
        if index < len(self.dashboards) and self.dashboards[index].conn is None:
            self._connect(self.dashboards[index], before, after)

    @rule(index=st.integers(0, CLIENTS - 1))
    def disconnect(self, index: int) -> None:
        if index < len(self.dashboards):
            dash = self.dashboards[index]
            self._read(dash)
            self._close(dash)

    @rule(index=st.integers(0, CLIENTS - 1))
    def read(self, index: int) -> None:
        if index < len(self.dashboards):
            self._read(self.dashboards[index])

    @rule()
    def new_epoch(self) -> None:
        """The server restarts on a memory backend: the stream and its state start over."""
        for dash in self.dashboards:
            self._read(dash)
            self._close(dash)
        self.loop.run_until_complete(self.broadcaster.close())
        self.broadcaster = self._new_broadcaster()
        event("new epoch")

    @rule()
    def check(self) -> None:
        """Every connected dashboard, once it read what waits, folds to the server's state."""
        server = self.loop.run_until_complete(self.backend.state())
        for dash in self.dashboards:
            if dash.conn is None:
                continue
            self._read(dash)
            assert dash.fold is not None
            assert fold_view(dash.fold.snapshot(), dash.globs) == fold_view(server, dash.globs)

    def teardown(self) -> None:
        for dash in self.dashboards:
            self._close(dash)
        self.loop.run_until_complete(self.broadcaster.close())
        self.loop.close()

    # ------------------------------------------------------------------ the client

    def _connect(self, dash: Dashboard, before: list[str], after: list[str]) -> None:
        self.backend.before = lambda: [self._publish(k) for k in before] and None
        self.backend.after = lambda: [self._publish(k) for k in after] and None

        async def go() -> tuple[Connection, contextlib.AsyncExitStack, bool | None]:
            stack = contextlib.AsyncExitStack()
            conn = await stack.enter_async_context(self.broadcaster.connection())
            resumed = await conn.subscribe(dash.globs, dash.position, state=True)
            return conn, stack, resumed

        dash.conn, dash.stack, resumed = self.loop.run_until_complete(go())
        self.backend.before = self.backend.after = None
        event(f"connect: since={dash.position is not None}, resumed={resumed}")
        if resumed:
            assert dash.fold is not None

    def _close(self, dash: Dashboard) -> None:
        if dash.stack is not None:
            self.loop.run_until_complete(dash.stack.aclose())
        dash.conn = dash.stack = None

    def _read(self, dash: Dashboard) -> None:
        """Process every queued frame the way livepanel's clients do."""
        conn = dash.conn
        if conn is None:
            return
        wanted = TypeFilter(dash.globs)
        for frame in conn.take():
            data = json.loads(frame.text)
            if data["type"] == "state":
                payload = data["payload"]
                last = payload["lastEventId"]
                fold = dash.fold = StateFold(parse_id(last)[0], start_id=last)
                entries = [
                    Event.from_dict(entry)
                    for collection in payload["collections"].values()
                    for entry in collection["entries"]
                ]
                fold.apply_all(sorted(entries, key=lambda e: parse_id(e.id)[1]))
                fold.last_event_id = last
                dash.position = last
                dash.applied = []
                self._check_covered(dash, last)
                continue
            assert data["type"] != "error", data  # state replaces resume_unavailable
            event_id = data["id"]
            assert wanted.matches(data["type"])
            assert dash.fold is not None, "an event before any state"
            assert event_id not in dash.applied, "an event applied twice"
            assert parse_id(event_id) > parse_id(dash.position or "x:0"), "an event the fold has"
            dash.fold.apply(Event.from_dict(data))
            dash.applied.append(event_id)
            dash.position = event_id
            self._check_in_order(dash)

    def _check_covered(self, dash: Dashboard, last: str) -> None:
        """The state's lastEventId is a position of this epoch's stream."""
        epoch, position = parse_id(last)
        assert epoch == self.backend.epoch
        assert position == (0,) or any(e.id == last for e in self.stream)

    def _check_in_order(self, dash: Dashboard) -> None:
        """Since the last state (or resume point), exactly the stream's matching events."""
        assert dash.fold is not None
        wanted = TypeFilter(dash.globs)
        start = dash.applied[0]
        ids = [e.id for e in self.stream if wanted.matches(e.type)]
        at = ids.index(start)
        assert dash.applied == ids[at : at + len(dash.applied)], "a gap or a reorder"


StateModel.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestStateModel = StateModel.TestCase
