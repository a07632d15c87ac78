"""Presence across tenants, tried as bob (audience ``user:bob``) who wants to learn who else
watches: live, by a ``since`` replay (WebSocket and Server-Sent Events), in a ``?state=1``
frame, on real servers. ``presence.changed`` names every user, so by default only
connections that see everything (root) receive it; a restricted connection gets it only
when the application says so (the audience ``PRESENCE_AUDIENCE``, or the one given to
``track``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from livepanel import BasicAuth, Broadcaster, LivePanelApp
from livepanel.events import SessionKilled
from livepanel.presence import PRESENCE_AUDIENCE, track
from tests.integration.helpers import TIMEOUT, basic, expect_frame, expect_welcome, open_ws
from tests.servers import RunningServer, run_server
from tests.sse.test_sse import Messages

USERS = {"alice": "a-pass", "bob": "b-pass", "root": "r-pass"}
Audiences = Callable[[Any, Any], "set[str] | None"]


def tenants(principal: Any, scope: Any) -> set[str] | None:
    """alice and bob see their own audience; root sees everything."""
    return None if principal == "root" else {f"user:{principal}"}


def tenant_app(broadcaster: Broadcaster, audiences: Audiences = tenants) -> LivePanelApp:
    auth = BasicAuth(lambda u, p: u if USERS.get(u) == p else None)
    return LivePanelApp(broadcaster, auth=auth, audiences=audiences)


def dashboard(server: RunningServer, user: str, query: str = "") -> Any:
    return open_ws(server, query, path="/", headers={"Authorization": basic(user, USERS[user])})


def marker(broadcaster: Broadcaster, key: str) -> str:
    event = broadcaster.publish(SessionKilled(session_key=key, agent_id="a1"))
    assert event.id is not None
    return event.id


def frames_until(ws: Any, last_id: str) -> list[dict[str, Any]]:
    """Every frame ``ws`` receives up to the event ``last_id`` (batched lines split)."""
    seen: list[dict[str, Any]] = []
    for _ in range(200):
        for line in ws.recv(timeout=TIMEOUT).split("\n"):
            seen.append(json.loads(line))
            if seen[-1].get("id") == last_id:
                return seen
    raise AssertionError(f"{last_id} never arrived; saw {seen}")


def presence_seen_by(ws: Any, users: list[str]) -> dict[str, Any]:
    """Read ``ws`` until a presence.changed naming exactly ``users`` arrives."""
    for _ in range(100):
        frame = json.loads(ws.recv(timeout=TIMEOUT))
        named = [u["user"] for u in frame.get("payload", {}).get("users", [])]
        if frame.get("type") == "presence.changed" and named == users:
            return frame
    raise AssertionError(f"no presence.changed naming {users}")


def names_nobody_else(frames: list[dict[str, Any]], me: str) -> None:
    """No presence.changed, and no other user's name anywhere in ``frames``."""
    assert [f for f in frames if f.get("type") == "presence.changed"] == []
    text = json.dumps(frames)
    for other in USERS:
        if other != me:
            assert f'"{other}"' not in text, text


@pytest.mark.parametrize("kind", ["uvicorn-websockets-sansio", "hypercorn"])
def test_attack_bob_learns_nobody_live_by_replay_or_in_state(kind: str) -> None:
    """root, alice and bob connected, presence announced: root's dashboard sees all three;
    bob's, live, after a since replay (query and subscribe) and in a state frame, sees no
    presence.changed and no other name."""
    broadcaster = Broadcaster()
    track(broadcaster, announce=True)
    with run_server(tenant_app(broadcaster), kind) as server:
        before = marker(broadcaster, "before")
        with (
            dashboard(server, "root") as root,
            dashboard(server, "alice") as alice,
            dashboard(server, "bob") as bob,
        ):
            for ws in (root, alice, bob):
                expect_welcome(ws)
            announced = presence_seen_by(root, ["alice", "bob", "root"])
            live = marker(broadcaster, "live")
            names_nobody_else(frames_until(bob, live), "bob")
            names_nobody_else(frames_until(alice, live), "alice")
            with dashboard(server, "bob", f"since={before}") as replay:
                expect_welcome(replay)
                names_nobody_else(frames_until(replay, live), "bob")
            with dashboard(server, "bob") as replay:
                expect_welcome(replay)
                replay.send(
                    json.dumps({"type": "subscribe", "payload": {"types": ["*"], "since": before}})
                )
                names_nobody_else(frames_until(replay, live), "bob")
            with dashboard(server, "bob", "state=1") as fresh:
                expect_welcome(fresh)
                state = expect_frame(fresh, "state")
                names_nobody_else([state], "bob")
            with dashboard(server, "root", f"since={before}") as root_again:
                expect_welcome(root_again)
                replayed = frames_until(root_again, live)
                assert announced["id"] in [f.get("id") for f in replayed]


def test_attack_bob_learns_nobody_over_server_sent_events() -> None:
    """The same over SSE, resuming with Last-Event-ID from before the announcement."""
    broadcaster = Broadcaster()
    track(broadcaster, announce=True)
    with run_server(tenant_app(broadcaster), "uvicorn-wsproto") as server:
        before = marker(broadcaster, "before")
        with dashboard(server, "root") as root, dashboard(server, "alice") as alice:
            expect_welcome(root)
            expect_welcome(alice)
            presence_seen_by(root, ["alice", "root"])
            live = marker(broadcaster, "live")
            headers = {
                "Accept": "text/event-stream",
                "Authorization": basic("bob", USERS["bob"]),
                "Last-Event-ID": before,
            }
            with (
                httpx.Client(timeout=httpx.Timeout(TIMEOUT), trust_env=False) as client,
                client.stream("GET", f"{server.http_url}/", headers=headers) as response,
            ):
                messages = Messages(response)
                received = []
                for _ in range(50):
                    message = messages.next()
                    received.append(message["data"])
                    if message.get("id") == live:
                        break
                names_nobody_else(received, "bob")
                assert received[-1]["id"] == live


def with_presence(principal: Any, scope: Any) -> set[str] | None:
    """alice may see who is watching; bob may not; root sees everything."""
    if principal == "alice":
        return {"user:alice", PRESENCE_AUDIENCE}
    return tenants(principal, scope)


def test_the_application_names_who_sees_presence() -> None:
    """A restricted connection given PRESENCE_AUDIENCE receives presence.changed; one
    without it still does not."""
    broadcaster = Broadcaster()
    track(broadcaster, announce=True)
    with run_server(tenant_app(broadcaster, with_presence), "uvicorn-wsproto") as server:
        with dashboard(server, "alice") as alice, dashboard(server, "bob") as bob:
            expect_welcome(alice)
            expect_welcome(bob)
            presence_seen_by(alice, ["alice", "bob"])
            live = marker(broadcaster, "live")
            names_nobody_else(frames_until(bob, live), "bob")


def test_track_takes_an_audience_of_the_applications_choice() -> None:
    """track(audience="team:ops"): ops members receive presence.changed, others do not;
    audience=None sends it to everyone, as the application chose; an empty one is refused."""
    broadcaster = Broadcaster()
    tracker = track(broadcaster, announce=True, audience="team:ops")
    assert tracker.audience == "team:ops"

    def ops(principal: Any, scope: Any) -> set[str] | None:
        return {"team:ops"} if principal == "alice" else {f"user:{principal}"}

    with run_server(tenant_app(broadcaster, ops), "uvicorn-wsproto") as server:
        with dashboard(server, "alice") as alice, dashboard(server, "bob") as bob:
            expect_welcome(alice)
            expect_welcome(bob)
            presence_seen_by(alice, ["alice", "bob"])
            live = marker(broadcaster, "live")
            names_nobody_else(frames_until(bob, live), "bob")
    assert track(Broadcaster(), audience=None).audience is None
    with pytest.raises(ValueError, match="audience is empty"):
        track(Broadcaster(), audience=set())
