"""What livepanel.js's ``catching_up`` status relies on: the answer to a ping sent right after
``welcome`` comes after the whole replay (or the state frame), on every server.

The server queues the replay or the state before it writes ``welcome``, and frames go out in
order; so a client whose replay ends in an event its type filter drops still learns where
the replay ends, without a marker frame of its own.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from websockets.sync.client import ClientConnection

from livepanel import Broadcaster, LivePanelApp
from tests.integration.helpers import (
    Serve,
    admin_only,
    agent_status,
    expect_welcome,
    open_ws,
    recv_json,
    session_created,
)

PING = json.dumps({"type": "ping", "payload": {"caughtUp": 7}})


def _until_pong(ws: ClientConnection, limit: int) -> list[dict[str, Any]]:
    """Every frame up to and including the pong echoing our ping (at most ``limit``)."""
    frames = []
    for _ in range(limit):
        frame = recv_json(ws)
        frames.append(frame)
        if frame["type"] == "pong":
            assert frame["payload"] == {"caughtUp": 7}, frame
            return frames
    raise AssertionError(f"no pong among the first {limit} frames")


def test_the_answer_to_a_ping_after_welcome_follows_the_whole_filtered_replay(
    serve: Serve,
) -> None:
    """500 session events to replay and a newest event of another type (filtered out): the
    pong comes after all 500, so the replay's end is known although no event has the
    welcome's lastEventId."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    since = session_created(broadcaster, 0).id or ""
    missed = [session_created(broadcaster, n).id for n in range(1, 501)]
    newest = agent_status(broadcaster, 1).id
    with open_ws(server, f"since={quote(since)}&types=session.*&batch=1") as ws:
        frames: list[dict[str, Any]] = []
        for _ in range(600):  # batched, as livepanel.js asks: several frames per message
            message = str(ws.recv(timeout=10))
            if not frames:
                ws.send(PING)  # what the client does once it has read the welcome
            frames += [json.loads(line) for line in message.split("\n") if line]
            if frames[-1]["type"] == "pong":
                break
        assert frames[0]["type"] == "welcome"
        assert frames[0]["payload"]["lastEventId"] == newest
        assert frames[-1]["type"] == "pong"
        assert frames[-1]["payload"] == {"caughtUp": 7}
        assert [f["id"] for f in frames if "id" in f] == missed


def test_the_answer_to_a_ping_after_welcome_follows_the_state_frame(serve: Serve) -> None:
    """With ?state=1 and no since the state frame comes first, then the pong."""
    broadcaster = Broadcaster()
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    for n in range(20):
        session_created(broadcaster, n)
    with open_ws(server, "state=1") as ws:
        expect_welcome(ws)
        ws.send(PING)
        assert [f["type"] for f in _until_pong(ws, 5)] == ["state", "pong"]
