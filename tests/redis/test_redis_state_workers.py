"""State on connect across two uvicorn workers on one Redis, and across a worker restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from tests.redis.redis_helpers import RedisServer
from tests.redis.test_redis_workers import receive_events, welcome, workers

pytestmark = pytest.mark.redis


def state_frame(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=5))
    assert frame["type"] == "state", frame
    return frame


def session_keys(frame: dict[str, Any]) -> list[str]:
    entries = frame["payload"]["collections"]["sessions"]["entries"]
    return [e["payload"]["sessionKey"] for e in entries]


def test_events_published_on_worker_a_are_in_the_state_a_client_of_b_gets(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Publish on A; connect to B with ?state=1: the state at A's last id, then live."""
    with workers(redis_server.url, tmp_path) as (a, b):
        a.publish(0, 5, "session.created")
        ids = a.publish(1, 2, "session.killed")
        with b.ws("?state=1") as ws:
            welcome(ws)
            frame = state_frame(ws)
            assert frame["payload"]["lastEventId"] == ids[-1]
            assert session_keys(frame) == ["s0", "s3", "s4"]
            live = a.publish(7, 1, "session.created")
            assert [e["id"] for e in receive_events(ws, 1)] == live


def test_a_worker_restart_keeps_the_state(redis_server: RedisServer, tmp_path: Path) -> None:
    """Every worker stops; a new one serves the same state."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with workers(redis_server.url, tmp_path / "first", count=1) as (a,):
        ids = a.publish(0, 3, "session.created")
        with a.ws("?state=1") as ws:
            welcome(ws)
            before = state_frame(ws)["payload"]
    with workers(redis_server.url, tmp_path / "second", count=1) as (b,), b.ws("?state=1") as ws:
        welcome(ws)
        after = state_frame(ws)["payload"]
    assert after == before
    assert after["lastEventId"] == ids[-1]
    assert session_keys({"payload": after}) == ["s0", "s1", "s2"]
