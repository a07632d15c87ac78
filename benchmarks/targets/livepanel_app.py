"""livepanel's endpoint, bare (no framework around it), on the server named by BENCH_SERVER.

BENCH_BACKEND: ``memory`` (default) or a ``redis://`` URL. Clients that want
batched frames connect with ``?batch=1``. BENCH_STATE_ENTRIES=K publishes K
``session.created`` events (the built-in ``sessions`` collection) before the
server starts, so that a ``?state=1`` connection gets a state frame of K entries.
"""

from __future__ import annotations

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import EVENT_TYPE, Target, payload, serve_asgi, with_control

from livepanel import Broadcaster, LivePanelApp, event_type
from livepanel.events import registered_types


class BenchTick:
    seq: int
    t: int
    pad: str


# granian's worker imports this file again as a module, after forking from __main__
if EVENT_TYPE not in registered_types():
    event_type(EVENT_TYPE)(BenchTick)

logging.getLogger("livepanel").setLevel(logging.ERROR)  # auth=None warns once per app
backend = os.environ.get("BENCH_BACKEND", "memory")
STATE_ENTRIES = int(os.environ.get("BENCH_STATE_ENTRIES", "0"))
broadcaster = Broadcaster(None if backend == "memory" else backend)
if STATE_ENTRIES:
    import livepanel.events.builtin  # noqa: F401 - the sessions collection, opt-in

    for n in range(STATE_ENTRIES):
        session = {"sessionKey": f"session-{n:05d}", "agentId": f"agent-{n % 7}", "kind": "direct"}
        broadcaster.publish("session.created", session)
# BENCH_AUDIENCE_GROUPS=10: each connection joins one of 10 audiences, round robin, and
# each event names all ten: every client still gets every event, through the audience path
GROUPS = [f"group:{n}" for n in range(int(os.environ.get("BENCH_AUDIENCE_GROUPS", "0")))]
joined = iter(range(10**9))


def audiences(principal: object, scope: object) -> set[str] | None:
    return {GROUPS[next(joined) % len(GROUPS)]} if GROUPS else None


# only with groups: the same target then still runs an older livepanel (fanout.py --compare)
options = {"audiences": audiences} if GROUPS else {}
endpoint = LivePanelApp(broadcaster, auth=None, client_rate=None, **options)
publish_options = {"audience": set(GROUPS)} if GROUPS else {}


def broadcast_one(seq: int) -> None:
    broadcaster.publish(EVENT_TYPE, payload(seq), **publish_options)


target = Target(lambda: broadcaster.connection_count, broadcast_one)
app = with_control(endpoint, target)

if __name__ == "__main__":
    serve_asgi("livepanel_app", app, os.environ.get("BENCH_SERVER", "uvicorn"))
