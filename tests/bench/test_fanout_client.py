"""The fan-out load client's permessage-deflate against a server that makes it work hard.

A real websockets server, configured unlike any benchmark target: no context
takeover on its side, a 10-bit window, and a message sent compressed in
fragments (RSV1 on the first frame only) with a ping between the others. The
client must inflate every message and find every sequence number.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from benchmarks.fanout_client import DEFLATE_OFFER, Dial, Run, close_all, open_clients
from websockets.asyncio.server import ServerConnection, serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

EVENTS = 30


def _message(seq: int) -> str:
    return json.dumps({"type": "bench.tick", "payload": {"seq": seq, "t": time.monotonic_ns()}})


async def _handler(ws: ServerConnection, fragment: bool) -> None:
    await ws.send('{"type":"welcome"}')
    for seq in range(EVENTS):
        if seq == 7 and fragment:  # one message in three fragments, a ping in between
            text = _message(seq)
            await ws.send(iter([text[:10], text[10:40], text[40:]]))
            await ws.ping()
        else:
            await ws.send(_message(seq))
    await ws.wait_closed()


async def _run(factory: ServerPerMessageDeflateFactory, offer: bool) -> list[Any]:
    # the uncompressed path reads messages straight off the frames' bytes, so it relies on
    # whole-message frames, as every target sends: only compressed runs get fragments
    async def handler(ws: ServerConnection) -> None:
        await _handler(ws, fragment=offer)

    async with serve(handler, "127.0.0.1", 0, compression=None, extensions=[factory]) as server:
        port = server.sockets[0].getsockname()[1]
        run = Run(3, EVENTS)
        conns = await open_clients(run, Dial(port, "/", "ws", 1, offer), 3)
        try:
            await asyncio.wait_for(run.done.wait(), 20)
        finally:
            close_all(conns)
        return conns


def test_no_context_takeover_a_small_window_and_fragments_are_inflated() -> None:
    factory = ServerPerMessageDeflateFactory(
        server_no_context_takeover=True, server_max_window_bits=10
    )
    conns = asyncio.run(_run(factory, offer=True))
    for conn in conns:
        assert conn.negotiated is not None
        assert "server_no_context_takeover" in conn.negotiated
        assert conn.window_bits == 10
        assert conn.takeover is False
        assert conn.received == EVENTS
        assert conn.gaps == conn.duplicates == 0
        assert conn.close_code is None


def test_context_takeover_is_kept_across_messages() -> None:
    """With context takeover a message may point back into earlier ones: inflating each
    with a fresh inflater would fail, so delivering every event shows one per connection."""
    conns = asyncio.run(_run(ServerPerMessageDeflateFactory(), offer=True))
    for conn in conns:
        assert conn.negotiated is not None
        assert conn.takeover is True
        assert conn.received == EVENTS
        assert conn.gaps == conn.duplicates == 0
        # repeated messages compress far below their ~90 bytes when history is shared
        assert conn.wire < EVENTS * 60


def test_without_the_offer_nothing_is_negotiated() -> None:
    conns = asyncio.run(_run(ServerPerMessageDeflateFactory(), offer=False))
    for conn in conns:
        assert conn.negotiated is None
        assert conn.inflater is None
        assert conn.received == EVENTS
    assert DEFLATE_OFFER == "permessage-deflate; client_max_window_bits"
