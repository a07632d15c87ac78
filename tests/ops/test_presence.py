"""Presence: who is connected on every worker, right within the expiry after a SIGKILL, and
presence.changed at most once a second."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from livepanel import Broadcaster
from livepanel.events import parse_timestamp
from livepanel.presence import ANNOUNCE_INTERVAL, track
from tests.faults.helpers import ServerProcess, server_processes, tracebacks
from tests.integration.helpers import basic, expect_welcome, recv_json
from tests.redis.redis_helpers import RedisServer, nothing_more, run, started, take

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
APP = "tests.ops.presence_worker_app:create_app"
EXPIRY = 2.0


def view(**users: int) -> dict[str, Any]:
    """A presence view of these users (with ``connections`` their total)."""
    return {
        "users": [{"user": u, "connections": n} for u, n in sorted(users.items())],
        "connections": sum(users.values()),
    }


class Dashboards:
    """Real connections of named users on broadcasters: what presence counts."""

    def __init__(self) -> None:
        self.open: dict[tuple[int, str], list[contextlib.AsyncExitStack]] = {}

    async def change(self, broadcaster: Broadcaster, user: str, delta: int) -> None:
        """Open (+1) or close (-1) one connection of ``user`` on ``broadcaster``."""
        held = self.open.setdefault((id(broadcaster), user), [])
        if delta > 0:
            stack = contextlib.AsyncExitStack()
            await stack.enter_async_context(broadcaster.connection(user=user))
            held.append(stack)
        else:
            await held.pop().aclose()

    async def __aenter__(self) -> Dashboards:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for held in self.open.values():
            while held:
                await held.pop().aclose()


def test_presence_counts_this_process_and_announces_changes_coalesced() -> None:
    """Memory backend: presence() follows the counts; the first change is announced at once,
    a burst after it in one presence.changed a second later, with the final view."""

    async def scenario() -> tuple[list[dict[str, Any]], list[float]]:
        async with started(Broadcaster()) as broadcaster:
            track(broadcaster, announce=True)
            async with (
                Dashboards() as dashboards,
                broadcaster.subscribe(["presence.changed"]) as events,
            ):
                await dashboards.change(broadcaster, "alice", +1)
                first = (await take(events, 1))[0]
                for user, delta in (("bob", +1), ("bob", +1), ("carol", +1), ("carol", -1)):
                    await dashboards.change(broadcaster, user, delta)
                    await asyncio.sleep(0.05)  # each change on its own loop turn
                assert await broadcaster.presence() == view(alice=1, bob=2)
                second = (await take(events, 1))[0]
                assert await nothing_more(events, within=ANNOUNCE_INTERVAL + 0.5)
                for user in ("alice", "bob", "bob"):
                    await dashboards.change(broadcaster, user, -1)
                third = (await take(events, 1))[0]
        changes = [dict(e.payload) for e in (first, second, third)]
        stamps = [e.timestamp.timestamp() for e in (first, second, third)]
        return changes, stamps

    changes, stamps = run(scenario())
    assert changes == [view(alice=1), view(alice=1, bob=2), view()]
    assert all(b - a >= ANNOUNCE_INTERVAL - 0.01 for a, b in itertools.pairwise(stamps))


def get(server: ServerProcess, path: str) -> Any:
    with OPENER.open(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
        return json.load(response)


@contextlib.contextmanager
def dashboard(server: ServerProcess, user: str, query: str = "") -> Iterator[ClientConnection]:
    """A client of ``user`` on ``server``, past its welcome."""
    headers = {"Authorization": basic(user, "any")}
    with connect(server.ws_url + query, additional_headers=headers, proxy=None) as ws:
        expect_welcome(ws)
        yield ws


def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds; fail after ``timeout``."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout, f"{what} not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - began


@pytest.mark.redis
def test_presence_across_workers_survives_a_sigkill_and_is_coalesced(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users join and leave on two workers, one worker is killed with SIGKILL: presence()
    is right on both, within the expiry after the kill; presence.changed comes at most
    once a second and ends on the final view."""
    monkeypatch.setenv("TEST_PRESENCE_EXPIRY", str(EXPIRY))
    with server_processes(["uvicorn-websockets"] * 2, tmp_path, redis_server.url, app=APP) as (
        workers
    ):
        a, b = workers
        with contextlib.ExitStack() as stack:
            observer = stack.enter_context(dashboard(a, "observer", "?types=presence.changed"))
            alice = stack.enter_context(dashboard(a, "alice"))
            for server, user in ((a, "bob"), (b, "bob"), (b, "carol")):
                stack.enter_context(dashboard(server, user))
            everyone = view(observer=1, alice=1, bob=2, carol=1)
            for server in (a, b):
                eventually(lambda s=server: get(s, "/presence") == everyone, 5, "everyone")

            alice.close()
            without_alice = view(observer=1, bob=2, carol=1)
            eventually(lambda: get(b, "/presence") == without_alice, 5, "alice's leave")

            b.signal(signal.SIGKILL)
            b.wait(5)
            survivors = view(observer=1, bob=1)
            took = eventually(lambda: get(a, "/presence") == survivors, EXPIRY + 1, "the kill")

            changes: list[dict[str, Any]] = []
            stamps: list[float] = []
            deadline = time.monotonic() + 5
            while not changes or changes[-1]["payload"] != survivors:
                assert time.monotonic() < deadline, changes
                changes.append(recv_json(observer, timeout=5))
                stamps.append(parse_timestamp(changes[-1]["timestamp"]).timestamp())
    assert tracebacks(a) == [], a.output()
    assert "Task was destroyed" not in a.output()
    assert {c["type"] for c in changes} == {"presence.changed"}
    payloads = [c["payload"] for c in changes]
    assert without_alice in payloads or everyone in payloads
    assert all(b - a >= ANNOUNCE_INTERVAL - 0.05 for a, b in itertools.pairwise(stamps)), stamps
    print(f"a SIGKILLed worker left presence after {took:.2f} s (expiry {EXPIRY} s)")


@pytest.mark.redis
def test_two_broadcasters_on_one_redis_see_each_others_users(redis_url: str) -> None:
    """Each worker's counts land in Redis; presence() adds them up; a worker whose last
    connection left drops out at once; one presence.changed carries the joined view."""

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        one, two = Broadcaster(redis_url), Broadcaster(redis_url)
        async with started(one), started(two):
            track(one, announce=True, expiry=5)
            track(two, announce=True, expiry=5)
            async with Dashboards() as dashboards, one.subscribe(["presence.changed"]) as events:
                await dashboards.change(one, "alice", +1)
                await dashboards.change(two, "alice", +1)
                await dashboards.change(two, "bob", +1)
                joined = view(alice=2, bob=1)
                deadline = time.monotonic() + 5
                while (seen := await two.presence()) != joined:
                    assert time.monotonic() < deadline, seen
                    await asyncio.sleep(0.05)
                both = await one.presence()
                await dashboards.change(two, "alice", -1)
                await dashboards.change(two, "bob", -1)
                while (after := await one.presence()) != view(alice=1):
                    assert time.monotonic() < deadline, after
                    await asyncio.sleep(0.05)
                announced = [dict(e.payload) for e in await take(events, 1, timeout=5)]
                while announced[-1] != view(alice=1):
                    announced += [dict(e.payload) for e in await take(events, 1, timeout=5)]
        return both, after, {"announced": announced}

    both, after, found = run(scenario())
    assert both == view(alice=2, bob=1)
    assert after == view(alice=1)
    assert found["announced"][-1] == view(alice=1)  # the last announcement is the final view
