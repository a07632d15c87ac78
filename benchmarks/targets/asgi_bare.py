"""What the ASGI server itself costs: a bare ASGI app that awaits each ``send`` in turn.

No framework, no queue, no filter: the least an ASGI application can do to
broadcast one frame to every connection. Served on BENCH_SERVER.
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Target, frame, serve_asgi, with_control

sends: dict[int, Any] = {}


async def endpoint(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    key = id(send)
    sends[key] = send
    try:
        while (await receive())["type"] != "websocket.disconnect":
            pass
    finally:
        sends.pop(key, None)


async def broadcast_one(seq: int) -> None:
    message = {"type": "websocket.send", "text": frame(seq)}
    for send in list(sends.values()):
        try:
            await send(message)
        except OSError:
            pass


target = Target(lambda: len(sends), broadcast_one)
app = with_control(endpoint, target)

if __name__ == "__main__":
    serve_asgi("asgi_bare", app, os.environ.get("BENCH_SERVER", "uvicorn"))
