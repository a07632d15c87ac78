"""Starlette with encode/broadcaster (``memory://``), as in broadcaster's README chat example."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import anyio
from _common import Target, frame, serve_asgi, with_control
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

broadcast = Broadcast("memory://")
subscribed = 0


async def bench_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    async with anyio.create_task_group() as task_group:

        async def run_receiver() -> None:
            async for _message in websocket.iter_text():
                pass
            task_group.cancel_scope.cancel()

        task_group.start_soon(run_receiver)
        await sender(websocket)


async def sender(websocket: WebSocket) -> None:
    global subscribed
    async with broadcast.subscribe(channel="bench") as subscriber:
        subscribed += 1
        try:
            async for event in subscriber:  # type: ignore[union-attr]
                await websocket.send_text(event.message)
        finally:
            subscribed -= 1


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await broadcast.connect()
    yield
    await broadcast.disconnect()


def broadcast_one(seq: int) -> object:
    return broadcast.publish(channel="bench", message=frame(seq))


starlette_app = Starlette(routes=[WebSocketRoute("/ws", bench_ws)], lifespan=lifespan)
target = Target(lambda: subscribed, broadcast_one)
app = with_control(starlette_app, target)

if __name__ == "__main__":
    serve_asgi("starlette_broadcaster", app, os.environ.get("BENCH_SERVER", "uvicorn"))
