"""python-socketio's ``AsyncServer`` (ASGI mode): ``emit`` to every connected client."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import socketio
from _common import Target, envelope, serve_asgi, with_control

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[])
connected = 0


@sio.event
async def connect(sid: str, environ: dict[str, object]) -> None:
    global connected
    connected += 1


@sio.event
async def disconnect(sid: str, reason: object = None) -> None:
    global connected
    connected -= 1


def broadcast_one(seq: int) -> object:
    return sio.emit("bench", envelope(seq))


target = Target(lambda: connected, broadcast_one)
app = with_control(socketio.ASGIApp(sio), target)

if __name__ == "__main__":
    serve_asgi("socketio_app", app, os.environ.get("BENCH_SERVER", "uvicorn"))
