"""The app of the non-reader attacks, served by a process of its own so that its memory can be
read: the livepanel endpoint at /ws (one connection per user), GET /health (its RSS, its slots
and the broadcaster's numbers) and POST /publish (sessions with 4 kB labels, or agent statuses)."""

from __future__ import annotations

import gc
import json
from typing import Any
from urllib.parse import parse_qsl

import livepanel.events.builtin  # noqa: F401 - sessions and agents: the state the attack asks for
from livepanel import Broadcaster, LivePanelApp
from livepanel.connection import Connection
from livepanel.outbox import Outbox
from tests.integration.helpers import admin_only

LABEL = "x" * 4000  # 300 sessions: a state frame of about 1.2 MB


def rss_bytes() -> int:
    """This process's resident memory."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


KINDS = (Connection, Outbox)
_cyclic = 0  # livepanel objects that only the cycle collector could free, since start-up


def _collect() -> None:
    """A collection; the livepanel objects it found in unreachable cycles are counted.

    Every collection keeps what it finds (``DEBUG_SAVEALL``, set at start-up), the
    automatic ones between two requests too: a cycle cannot slip past by being freed
    before anyone looked.
    """
    global _cyclic
    gc.collect()
    _cyclic += sum(1 for o in gc.garbage if isinstance(o, KINDS))
    gc.set_debug(0)
    gc.garbage.clear()
    gc.collect()  # what was kept is still in its cycles: free it for good this time
    gc.set_debug(gc.DEBUG_SAVEALL)


def livepanel_leftovers() -> int:
    """livepanel's per-connection objects still in memory, unreachable ones included (asked
    before any collection): a closed connection must be freed at once, never wait for the
    cycle collector."""
    return sum(1 for o in gc.get_objects() if isinstance(o, KINDS))


def cyclic() -> int:
    """livepanel's per-connection objects that sat in a reference cycle, since start-up."""
    _collect()
    return _cyclic


def measured_rss() -> int:
    """RSS once the cycle collector ran: the ASGI server's own objects may sit in reference
    cycles (hypercorn's per-connection ones do), freed whenever a collection comes, which
    depends on how much the process allocates; livepanel's are counted apart."""
    _collect()
    return rss_bytes()


def create_app() -> Any:
    """The endpoint and the two routes the test drives it with."""
    gc.set_debug(gc.DEBUG_SAVEALL)  # every collection keeps its finds for _collect()
    broadcaster = Broadcaster(queue_size=16, history=100)
    endpoint = LivePanelApp(broadcaster, auth=admin_only(), max_connections_per_user=1)

    async def reply(send: Any, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" or scope["path"].startswith("/ws"):
            await endpoint(scope, receive, send)
        elif scope["path"] == "/health":
            stats = broadcaster.stats()
            await reply(
                send,
                {
                    "leftovers": livepanel_leftovers(),
                    "cyclic": cyclic(),
                    "rss": measured_rss(),
                    "slots": endpoint.connection_count,
                    "connections": stats["connections"],
                    "slow_disconnects": stats["slow_disconnects"],
                },
            )
        elif scope["path"] == "/publish":
            query = dict(parse_qsl(scope["query_string"].decode()))
            n = int(query.get("n", "1"))
            for i in range(n):
                if query.get("kind") == "sessions":
                    payload = {"sessionKey": f"s{i}", "agentId": "a", "kind": "direct"}
                    broadcaster.publish("session.created", {**payload, "label": LABEL})
                else:
                    status = {"agentId": f"a{i}", "status": "running", "activeSessionCount": i}
                    broadcaster.publish("agent.status", status)
            await reply(send, {"published": n})

    return app
