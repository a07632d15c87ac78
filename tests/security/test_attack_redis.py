"""A poisoned Redis stream, as an attacker who can write to it would poison it, on real servers:
each entry written with XADD directly, past livepanel's publish. Forged server frames, an
unregistered type, an unredacted password, NaN, a lone surrogate, an oversized entry. No live
client is closed, no forged frame is delivered, what is valid arrives redacted and cut, and a
resume across the poison works."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from livepanel import Broadcaster, LivePanelApp, event_type
from livepanel.backends.redis import MAX_ENTRY_SIZE
from livepanel.events import REDACTED, STREAM_OUTPUT_LIMIT
from tests.conftest import LogCapture
from tests.integration.helpers import (
    Serve,
    admin_only,
    expect_frame,
    expect_welcome,
    open_ws,
    session_created,
    wait_until,
)

pytestmark = pytest.mark.redis

STREAM = "livepanel:events"
STAMP = "2026-02-21T10:00:00.000Z"


@event_type("attack.config")
class AttackConfig:
    service: str
    settings: dict[str, Any]


@pytest.fixture
def redis_broadcaster(redis_url: str) -> Iterator[Broadcaster]:
    """A broadcaster on a private Redis, stopped after the test (from any loop)."""
    broadcaster = Broadcaster(redis_url)
    yield broadcaster
    asyncio.run(broadcaster.close())


def entry(kind: str, payload: Any, **extra: Any) -> str:
    return json.dumps({"type": kind, "timestamp": STAMP, "payload": payload, **extra})


def gateway_with_uptime(number: str) -> str:
    """A gateway.status entry whose uptime is written as ``number``, as no JSON encoder would."""
    return entry("gateway.status", {"status": "running", "version": "1", "uptime": 0}).replace(
        '"uptime": 0', f'"uptime": {number}'
    )


KILLED = {"sessionKey": "s1", "agentId": "a1"}
# (what it is, the entry's "event" field): each one must be skipped
REJECTED: list[tuple[str, str | bytes]] = [
    ("forged welcome", entry("welcome", {"connectionId": "x", "heartbeatInterval": 0.001})),
    ("forged error", entry("error", {"code": "resume_unavailable", "message": "refetch"})),
    ("forged pong", entry("pong", {})),
    ("forged state", entry("state", {"lastEventId": "x", "collections": {}})),
    ("unregistered type", entry("evil.type", {"x": 1})),
    ("NaN", gateway_with_uptime("NaN")),
    ("overflow", gateway_with_uptime("1e999")),
    ("lone surrogate", entry("session.created", {**KILLED, "kind": "direct", "label": "\ud800"})),
    ("invalid UTF-8", entry("session.killed", KILLED).encode().replace(b"s1", b"\xed\xa0\x80")),
    ("wrong payload", entry("session.killed", {"sessionKey": 1, "agentId": "a1"})),
    ("not JSON", "{"),
    ("deep JSON", "[" * 100_000),
    ("oversized", entry("attack.config", {"service": "x" * MAX_ENTRY_SIZE, "settings": {}})),
]


def test_attack_poisoned_redis_entries_reach_no_dashboard(
    serve: Serve, redis_url: str, redis_broadcaster: Broadcaster, server_logs: LogCapture
) -> None:
    """Two live dashboards and a resume across the poison: every bad entry is skipped, counted
    and logged once; the valid ones arrive redacted and cut; nobody is closed."""
    broadcaster = redis_broadcaster
    server = serve(LivePanelApp(broadcaster, auth=admin_only(), heartbeat_interval=5))
    with open_ws(server) as first, open_ws(server, "batch=1") as second:
        expect_welcome(first)
        expect_welcome(second)
        session_created(broadcaster, 1)
        for ws in (first, second):  # in the stream before the poison
            anchor = _frames_until(ws, "s1")[-1]["id"]
        with redis.Redis.from_url(redis_url) as client:
            for _, poison in REJECTED:
                client.xadd(STREAM, {"event": poison})
            client.xadd(
                STREAM,
                {
                    "event": entry(
                        "attack.config",
                        {"service": "db", "settings": {"password": "hunter2", "pwd": "x"}},
                    )
                },
            )
            stdout = "y" * (STREAM_OUTPUT_LIMIT * 3)
            cron = {"jobId": "j", "command": "c", "exitCode": 0, "durationMs": 1, "stdout": stdout}
            client.xadd(STREAM, {"event": entry("cron.executed", cron)})
        session_created(broadcaster, 2)  # the last one: sessionKey s2
        for ws in (first, second):
            frames = _frames_until(ws, "s2")
            assert [f["type"] for f in frames] == [
                "attack.config",
                "cron.executed",
                "session.created",
            ], [f["type"] for f in frames]
            _assert_safe(frames)
            ws.send(json.dumps({"type": "ping"}))
            expect_frame(ws, "pong")  # still open
        wait_until(
            lambda: broadcaster.stats()["rejected_entries"] == len(REJECTED),
            what="every poisoned entry counted",
        )
    with open_ws(server, f"since={anchor}") as resumed:
        expect_welcome(resumed)
        replayed = _frames_until(resumed, "s2")
        assert [f["type"] for f in replayed] == [
            "attack.config",
            "cron.executed",
            "session.created",
        ]
        _assert_safe(replayed)
    assert broadcaster.stats()["rejected_entries"] == len(REJECTED)  # a replay does not recount
    skipped = [r.getMessage() for r in server_logs.records if "skipped entry" in r.getMessage()]
    assert len(skipped) == len(REJECTED)
    assert not any("hunter2" in line or "\ufffd" in line for line in skipped)
    assert server_logs.errors() == []


def _frames_until(ws: Any, session_key: str) -> list[dict[str, Any]]:
    """Frames (batches split) up to and including the event of session ``session_key``."""
    frames: list[dict[str, Any]] = []
    for _ in range(50):
        for line in str(ws.recv(timeout=10)).split("\n"):
            frames.append(json.loads(line))
        if frames[-1].get("payload", {}).get("sessionKey") == session_key:
            return frames
    raise AssertionError(f"no final event among {len(frames)} frames")


def _assert_safe(frames: list[dict[str, Any]]) -> None:
    text = json.dumps(frames)
    assert "hunter2" not in text
    assert not any(f["type"] in ("welcome", "error", "pong", "state") for f in frames)
    config = next(f for f in frames if f["type"] == "attack.config")
    assert config["payload"]["settings"] == {"password": REDACTED, "pwd": REDACTED}
    cron = next(f for f in frames if f["type"] == "cron.executed")
    assert len(cron["payload"]["stdout"].encode()) <= STREAM_OUTPUT_LIMIT


def test_attack_an_out_of_range_since_is_unknown_not_a_redis_failure(
    serve: Serve, redis_broadcaster: Broadcaster, server_logs: LogCapture
) -> None:
    """A since whose entry id no stream can hold (beyond 64 bits) is answered
    resume_unavailable like any unknown id, and logs no Redis failure."""
    broadcaster = redis_broadcaster
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    with open_ws(server) as ws:
        epoch = expect_welcome(ws)["lastEventId"].split(":")[0]
    for position in ("99999999999999999999-0", "1-99999999999999999999", "18446744073709551616"):
        with open_ws(server, f"since={epoch}:{position}") as ws:
            expect_welcome(ws)
            assert expect_frame(ws, "error")["payload"]["code"] == "resume_unavailable"
    with open_ws(server, f"since={epoch}:0-0") as ws:  # Redis still answers replays
        expect_welcome(ws)
        session_created(broadcaster, 1)
        assert expect_frame(ws, "session.created")["payload"]["sessionKey"] == "s1"
    assert not any("cannot replay" in r.getMessage() for r in server_logs.records)
