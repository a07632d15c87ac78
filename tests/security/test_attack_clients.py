"""The Python client against a hostile (or flapping) server, on a real socket: a server that
welcomes and drops at once, with a forged second welcome announcing a tiny heartbeat, must
not keep the client reconnecting fast forever. (The browser client's counterpart is in
tests/js/client.test.mjs, the tests named "attack: ...".)"""

from __future__ import annotations

import pytest

from livepanel.client import STABLE_AFTER, ConnectionFailed, connect
from tests.client.helpers import FAST, Collector, Peer, ScriptedServer, event, run, welcome


async def welcome_and_drop(peer: Peer) -> None:
    await peer.accept()
    await peer.send(welcome(), welcome(heartbeat=0.001), event("e1:1"))
    await peer.close(1011)


def test_attack_a_server_that_welcomes_and_drops_uses_up_the_retries() -> None:
    """Every connection is welcomed, carries frames and is dropped at once: the retries are
    not reset by any of them, so max_retries=3 gives up after the first connection and three
    reconnections, and the forged welcome's heartbeat is ignored."""

    async def scenario() -> None:
        async with (
            ScriptedServer(*[welcome_and_drop] * 8) as server,
            connect(server.url, max_retries=3, **FAST) as client,
        ):
            collector = Collector(client)
            with pytest.raises(ConnectionFailed, match="gave up after 3"):
                await collector.task
            assert len(server.peers) == 4
            assert client.heartbeat_interval == 25.0

    assert STABLE_AFTER >= 1.0
    run(scenario())
