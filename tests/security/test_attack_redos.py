"""ReDoS through a type glob, as an attacker would try it on real servers: a logged-in client
subscribes with globs built to make a backtracking matcher explode ("*?" * 11 + "Z", and the
longest the limits allow), with ``since``, so every retained event's long type is matched.
Another client's ping must still be answered at once."""

from __future__ import annotations

import json
import time

from livepanel import Broadcaster, LivePanelApp, event_type
from livepanel.protocol import MAX_GLOB_LENGTH, MAX_GLOBS
from tests.integration.helpers import (
    Serve,
    admin_only,
    expect_frame,
    expect_welcome,
    open_ws,
    session_created,
)

# long registered types, all different, so no answer comes from a filter's cache
LONG_TYPES = [f"attack.{'a' * 100}.t{n:02d}" for n in range(40)]
for _name in LONG_TYPES:
    event_type(_name)(type(f"Long{_name[-2:]}", (), {"__annotations__": {"n": int}}))

# (globs, how many of the replayed events they match)
PATHOLOGICAL = [
    (["*?" * 11 + "Z"], 0),  # froze every connection for 2.3 s against one 31-character type
    (["*?" * ((MAX_GLOB_LENGTH - 1) // 2) + "Z"] * MAX_GLOBS, 0),  # the worst the limits allow
    (["*" + "?*" * 63] * MAX_GLOBS, len(LONG_TYPES)),  # matches, after all the same work
]


def test_attack_pathological_globs_with_since_do_not_stall_other_clients(serve: Serve) -> None:
    """Each pathological subscribe, replayed over 40 long types, leaves another client's ping
    answered within 50 ms."""
    broadcaster = Broadcaster(history=1000)
    server = serve(LivePanelApp(broadcaster, auth=admin_only()))
    anchor = session_created(broadcaster, 0)
    for n, name in enumerate(LONG_TYPES):
        broadcaster.publish(name, {"n": n})
    with open_ws(server) as attacker, open_ws(server) as victim:
        expect_welcome(attacker)
        expect_welcome(victim)
        for globs, expected in PATHOLOGICAL:
            subscribe = {"type": "subscribe", "payload": {"types": globs, "since": anchor.id}}
            attacker.send(json.dumps(subscribe))
            started = time.perf_counter()
            victim.send(json.dumps({"type": "ping", "payload": {"n": 1}}))
            expect_frame(victim, "pong")
            elapsed = time.perf_counter() - started
            assert elapsed < 0.05, f"ping answered after {elapsed * 1000:.0f} ms"
            attacker.send(json.dumps({"type": "ping"}))
            frames = [json.loads(attacker.recv(timeout=5)) for _ in range(expected + 1)]
            assert [f["type"] for f in frames] == [*LONG_TYPES[:expected], "pong"]
