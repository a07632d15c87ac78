"""The reference: websockets' own asyncio server and ``websockets.broadcast()``."""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Target, frame
from websockets.asyncio.server import ServerConnection, broadcast, serve

clients: set[ServerConnection] = set()
# off, as before, unless the load client offers permessage-deflate (fanout.py --deflate):
# then websockets' default, as a deployment that left it alone would run
COMPRESSION = "deflate" if os.environ.get("BENCH_DEFLATE") == "1" else None


async def handler(websocket: ServerConnection) -> None:
    clients.add(websocket)
    try:
        await websocket.wait_closed()
    finally:
        clients.discard(websocket)


def broadcast_one(seq: int) -> None:
    broadcast(clients, frame(seq))


async def main() -> None:
    target = Target(lambda: len(clients), broadcast_one)
    await target.start_control()
    port = int(os.environ["BENCH_PORT"])
    async with serve(handler, "127.0.0.1", port, backlog=4096, compression=COMPRESSION) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
