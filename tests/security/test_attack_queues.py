"""Attacks on the server's memory and time through a logged-in connection: a client that
never reads while it makes the server queue pongs, and a client that asks for replay after
replay of a long history while it reads nothing (issue: unbounded control queue, free
replays)."""

from __future__ import annotations

import asyncio
import json
import time

from livepanel import Broadcaster, LivePanelApp
from livepanel.connection import MAX_CONTROL_FRAMES
from tests.integration.helpers import TIMEOUT, Serve, admin_only, expect_welcome, open_ws
from tests.integration.test_slow_consumer import cron_output, stalled_reader


def wait_until(condition: object, timeout: float = 10.0) -> bool:
    """Poll ``condition()`` until it holds or ``timeout`` passes (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_attack_a_non_reading_ping_flooder_is_closed_before_its_pongs_pile_up(
    serve: Serve,
) -> None:
    """A client that sends pings (3 kB payloads, echoed) and never reads is closed as a slow
    consumer once MAX_CONTROL_FRAMES pongs wait for it; the server holds no more than that."""
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=admin_only(), client_rate=None)
    server = serve(app)
    ping = json.dumps({"type": "ping", "payload": {"pad": "x" * 3000}})
    with stalled_reader(server) as attacker:
        sent = 0
        for _ in range(20 * MAX_CONTROL_FRAMES):  # bounded: far more than the bound allows
            if broadcaster.stats()["slow_disconnects"]:
                break
            try:
                attacker.send(ping)
            except Exception:  # the server closed it: that is the point
                break
            sent += 1
        assert wait_until(lambda: broadcaster.stats()["slow_disconnects"] == 1)
        assert wait_until(lambda: broadcaster.connection_count == 0)
    assert sent > MAX_CONTROL_FRAMES  # it really flooded before it was cut off


def test_attack_replay_after_replay_by_a_non_reader_is_refused_and_charged(serve: Serve) -> None:
    """A client that never reads asks again and again for a replay of a 600-event history
    (18 MB): one replay is queued for it, the others are refused (rate_limited, then 1008),
    and another client's pings are answered promptly throughout."""
    broadcaster = Broadcaster(history=600)
    server = serve(LivePanelApp(broadcaster, auth=admin_only(), client_rate=20.0, client_burst=40))
    first = cron_output(broadcaster, 0)
    for n in range(1, 600):
        cron_output(broadcaster, n)
    replay = json.dumps({"type": "subscribe", "payload": {"types": ["*"], "since": first.id}})
    rtts: list[float] = []
    with open_ws(server) as good, stalled_reader(server) as attacker:
        expect_welcome(good)
        began = time.monotonic()
        for n in range(40):  # 20 a second for two seconds
            try:
                attacker.send(replay)
            except Exception:  # closed for ignoring rate_limited: fine
                break
            sent_at = time.monotonic()
            good.send(json.dumps({"type": "ping", "payload": {"n": n}}))
            while True:
                frame = json.loads(good.recv(timeout=TIMEOUT))
                if frame["type"] == "pong":
                    break
            rtts.append(time.monotonic() - sent_at)
            time.sleep(max(0.0, began + (n + 1) / 20 - time.monotonic()))
    # one replay of 599 events materialized for the attacker, not one per request
    assert broadcaster.stats()["replayed"] <= 599 * 2
    assert max(rtts) < 1.0, rtts


def test_replays_share_the_broadcasts_json_instead_of_encoding_per_connection() -> None:
    """Two connections replaying the same history get the very same text objects: a replay
    costs a reference per event, not a new encoding."""

    async def scenario() -> bool:
        broadcaster = Broadcaster(history=50)
        async with broadcaster.connection():  # a live listener: the broadcast is encoded
            first = broadcaster.publish("session.killed", {"sessionKey": "s0", "agentId": "a"})
            for n in range(1, 20):
                broadcaster.publish("session.killed", {"sessionKey": f"s{n}", "agentId": "a"})
        assert first.id is not None
        async with broadcaster.connection() as one, broadcaster.connection() as two:
            assert await one.subscribe(["*"], first.id)
            assert await two.subscribe(["*"], first.id)
            texts_one = [frame.text for frame in one.outbox]
            texts_two = [frame.text for frame in two.outbox]
        await broadcaster.close()
        shared = all(a is b for a, b in zip(texts_one, texts_two, strict=True))
        return len(texts_one) == 19 and shared

    assert asyncio.run(scenario())
