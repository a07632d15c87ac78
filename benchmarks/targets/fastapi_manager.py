"""The ``ConnectionManager`` of FastAPI's WebSocket docs: ``broadcast`` awaits each send in turn.

https://fastapi.tiangolo.com/advanced/websockets/#handling-disconnections-and-multiple-clients
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Target, frame, serve_asgi, with_control
from fastapi import FastAPI, WebSocket, WebSocketDisconnect


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        self.active_connections.remove(websocket)

    async def broadcast(self, message: str) -> None:
        for connection in self.active_connections:
            await connection.send_text(message)


manager = ConnectionManager()
fastapi_app = FastAPI()


@fastapi_app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await manager.connect(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        manager.disconnect(websocket)


def broadcast_one(seq: int) -> object:
    return manager.broadcast(frame(seq))


target = Target(lambda: len(manager.active_connections), broadcast_one)
app = with_control(fastapi_app, target)

if __name__ == "__main__":
    serve_asgi("fastapi_manager", app, os.environ.get("BENCH_SERVER", "uvicorn"))
