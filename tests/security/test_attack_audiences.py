"""Who sees what, tried as a user who wants to see another tenant's events: live, by
``since`` replay, in a batched frame, from another worker, after a Redis restart; and
revocation across workers. Alice and Bob are two tenants; root sees everything."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from livepanel import BasicAuth, Broadcaster, Event, LivePanelApp, TicketAuth, Tickets
from livepanel.events import SessionKilled
from tests.integration.helpers import TIMEOUT, basic, expect_welcome, open_ws, recv_json
from tests.redis.redis_helpers import RedisServer, run, started
from tests.servers import RunningServer, run_server

USERS = {"alice": "a-pass", "bob": "b-pass", "root": "r-pass"}
HIDDEN_WIRE_KEYS = ("audience", "trace")


def tenant_app(broadcaster: Broadcaster) -> LivePanelApp:
    """alice and bob see their own audience; root sees everything."""
    auth = BasicAuth(lambda u, p: u if USERS.get(u) == p else None)

    def audiences(principal: Any, scope: Any) -> set[str] | None:
        return None if principal == "root" else {f"user:{principal}"}

    return LivePanelApp(broadcaster, auth=auth, audiences=audiences)


def dashboard(server: RunningServer, user: str, query: str = "") -> Any:
    return open_ws(server, query, path="/", headers={"Authorization": basic(user, USERS[user])})


def killed(key: str) -> SessionKilled:
    return SessionKilled(session_key=key, agent_id="a1")


def keys_until(ws: Any, last: str) -> list[str]:
    """The session keys of the events ``ws`` receives, up to the one named ``last``
    (frames checked for anything that must never be on the wire)."""
    seen: list[str] = []
    for _ in range(200):
        raw = ws.recv(timeout=TIMEOUT)
        for line in raw.split("\n"):  # batched frames hold several
            frame = json.loads(line)
            assert not any(key in frame for key in HIDDEN_WIRE_KEYS), frame
            if "id" in frame:
                seen.append(frame["payload"]["sessionKey"])
                if seen[-1] == last:
                    return seen
    raise AssertionError(f"{last} never arrived; saw {seen}")


def publish_mixed(broadcaster: Broadcaster) -> list[Event]:
    """An event for bob only, one for alice only, one for both, one for everyone."""
    return [
        broadcaster.publish(killed("bob-secret"), audience={"user:bob"}),
        broadcaster.publish(killed("alice-secret"), audience="user:alice"),
        broadcaster.publish(killed("shared"), audience={"user:alice", "user:bob"}),
        broadcaster.publish(killed("public")),
    ]


ALICE_SEES = ["alice-secret", "shared", "public"]
BOB_SEES = ["bob-secret", "shared", "public"]
ROOT_SEES = ["bob-secret", "alice-secret", "shared", "public"]


@pytest.mark.parametrize("batch", [False, True])
def test_attack_alice_never_receives_bobs_events_live(batch: bool) -> None:
    """Live, plain or batched: each tenant gets its own events and the shared ones, root
    gets all, and no frame carries an audience."""
    broadcaster = Broadcaster()
    query = "batch=1" if batch else ""
    with run_server(tenant_app(broadcaster), "uvicorn-websockets-sansio") as server:
        with (
            dashboard(server, "alice", query) as alice,
            dashboard(server, "bob", query) as bob,
            dashboard(server, "root", query) as root,
        ):
            for ws in (alice, bob, root):
                expect_welcome(ws)
            publish_mixed(broadcaster)
            assert keys_until(alice, "public") == ALICE_SEES
            assert keys_until(bob, "public") == BOB_SEES
            assert keys_until(root, "public") == ROOT_SEES


def test_attack_alice_cannot_replay_bobs_events_with_since() -> None:
    """A resume with since from before bob's event replays only what alice may see."""
    broadcaster = Broadcaster()
    before = broadcaster.publish(killed("before"))
    publish_mixed(broadcaster)
    with run_server(tenant_app(broadcaster), "uvicorn-wsproto") as server:
        with dashboard(server, "alice", f"since={before.id}") as alice:
            expect_welcome(alice)
            assert keys_until(alice, "public") == ALICE_SEES
        subscribe = {"type": "subscribe", "payload": {"types": ["*"], "since": before.id}}
        with dashboard(server, "alice") as alice:
            expect_welcome(alice)
            alice.send(json.dumps(subscribe))
            assert keys_until(alice, "public") == ALICE_SEES


@contextmanager
def two_workers(
    url: str,
) -> Iterator[tuple[Broadcaster, Broadcaster, RunningServer, RunningServer]]:
    """Two broadcasters on one Redis stream, each behind its own server: two workers."""
    one, two = Broadcaster(url), Broadcaster(url)
    with ExitStack() as stack:
        # with lifespan, as a worker runs: its broadcaster starts (and reads) at startup
        a = stack.enter_context(
            run_server(tenant_app(one), "uvicorn-websockets-sansio", lifespan=True)
        )
        b = stack.enter_context(run_server(tenant_app(two), "hypercorn", lifespan=True))
        yield one, two, a, b
        for broadcaster in (one, two):
            run(broadcaster.close())


def test_attack_events_published_on_another_worker_keep_their_audience(
    redis_server: RedisServer,
) -> None:
    """Published on worker A for bob, read from Redis by worker B: alice on B never sees it."""
    with two_workers(redis_server.url) as (one, _two, _a, b):
        with dashboard(b, "alice") as alice, dashboard(b, "bob") as bob:
            expect_welcome(alice)
            expect_welcome(bob)
            publish_mixed(one)
            assert keys_until(alice, "public") == ALICE_SEES
            assert keys_until(bob, "public") == BOB_SEES


def test_attack_the_audience_survives_a_redis_restart(persistent_redis: RedisServer) -> None:
    """The audience is stored with the entry: after Redis restarts, a replay by alice from
    before the events still holds none of bob's."""

    async def publish() -> str:
        async with started(Broadcaster(persistent_redis.url)) as b:
            before = await b.apublish(killed("before"))
            await b.apublish(killed("bob-secret"), audience={"user:bob"})
            await b.apublish(killed("shared"), audience={"user:alice", "user:bob"})
            await b.apublish(killed("public"))
            assert before.id is not None
            return before.id

    async def replay(since: str) -> list[str]:
        async with started(Broadcaster(persistent_redis.url)) as b:
            async with b.connection(audiences={"user:alice"}) as conn:
                assert await conn.subscribe(["*"], since) is True
                return [f.event.payload["sessionKey"] for f in conn.outbox if f.event]

    since = run(publish())
    persistent_redis.restart()
    assert run(replay(since)) == ["shared", "public"]


def test_disconnect_user_closes_theirs_on_every_worker_and_nobody_elses(
    redis_server: RedisServer,
) -> None:
    """disconnect(user="alice") on worker A closes alice's dashboards on A and B within a
    second, with 1008; bob's and root's stay open and keep receiving."""
    with two_workers(redis_server.url) as (one, two, a, b):
        with (
            dashboard(a, "alice") as alice_a,
            dashboard(b, "alice") as alice_b,
            dashboard(b, "bob") as bob_b,
            dashboard(a, "root") as root_a,
        ):
            for ws in (alice_a, alice_b, bob_b, root_a):
                expect_welcome(ws)

            async def revoke() -> int:
                return await one.disconnect(user="alice")

            began = time.monotonic()
            assert asyncio.run_coroutine_threadsafe(revoke(), one.backend_loop).result(5) == 1  # type: ignore[arg-type]
            for ws in (alice_a, alice_b):
                with pytest.raises(ConnectionClosed) as closed:
                    recv_json(ws, timeout=2)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1008
            assert time.monotonic() - began < 1.0
            two.publish(killed("after"))
            assert keys_until(bob_b, "after") == ["after"]
            assert keys_until(root_a, "after") == ["after"]
            assert one.connection_count == 1
            assert two.connection_count == 1


def test_disconnect_by_audience_closes_the_members_only() -> None:
    """disconnect(audience="user:bob") on one process closes bob's connections; root, who
    sees everything but belongs to no audience, stays."""
    broadcaster = Broadcaster()
    with run_server(tenant_app(broadcaster), "uvicorn-wsproto") as server:
        with dashboard(server, "bob") as bob, dashboard(server, "root") as root:
            expect_welcome(bob)
            expect_welcome(root)
            closed = run(broadcaster.disconnect(audience={"user:bob"}, code=4001))
            assert closed == 1
            with pytest.raises(ConnectionClosed) as info:
                recv_json(bob, timeout=2)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 4001
            broadcaster.publish(killed("still"))
            assert keys_until(root, "still") == ["still"]


def test_disconnect_refuses_codes_a_server_may_not_send_and_an_empty_order() -> None:
    """1006 or 1015 cannot be sent; a disconnect naming nobody is a mistake."""
    broadcaster = Broadcaster()
    for kwargs in ({"user": "a", "code": 1006}, {"user": "a", "code": 1015}, {}):
        with pytest.raises(ValueError):
            run(broadcaster.disconnect(**kwargs))


def test_attack_a_ticket_holder_sees_only_the_tickets_audiences() -> None:
    """A dashboard on a ticket minted for alice's audiences gets alice's events and the
    public ones, never bob's: the ticket's audiences are the connection's."""
    broadcaster = Broadcaster()
    tickets = Tickets("s" * 32, broadcaster=broadcaster)
    app = LivePanelApp(broadcaster, auth=TicketAuth(tickets))
    with run_server(app, "uvicorn-websockets-sansio") as server:
        ticket = tickets.issue("alice", audiences={"user:alice"})
        with open_ws(server, f"ticket={ticket}", path="/", headers={}) as alice:
            expect_welcome(alice)
            publish_mixed(broadcaster)
            assert keys_until(alice, "public") == ALICE_SEES
