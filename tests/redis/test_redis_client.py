"""The Python client across a server restart on the Redis backend: nothing missed, nothing twice."""

from __future__ import annotations

from typing import Any

import pytest

from livepanel import Broadcaster, Event, LivePanelApp
from livepanel.client import connect
from tests.client.helpers import (
    FAST,
    PASSWORD,
    USER,
    Collector,
    basic_auth,
    errors_besides_shutdown,
    run,
    served,
)
from tests.redis.redis_helpers import Tick
from tests.servers import SERVERS

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("kind", SERVERS)
def test_client_resumes_after_a_restart_with_a_new_broadcaster(
    kind: str, redis_url: str, server_logs: Any
) -> None:
    """A restarted server (a new broadcaster on the same stream) replays what was published
    while it was down, by another process, then goes on live."""

    async def scenario() -> None:
        publisher = Broadcaster(redis_url)  # another worker, publishing all along
        app = LivePanelApp(Broadcaster(redis_url), auth=basic_auth())
        async with served(app, kind, lifespan=True) as first:
            port = first.port
            client = connect(
                first.ws_url + "/", username=USER, password=PASSWORD, max_retries=100, **FAST
            )
            await client.__aenter__()
            collector = Collector(client)
            published: list[Event] = [await publisher.apublish(Tick(n=n)) for n in range(3)]
            await collector.wait_events(3)
        published += [await publisher.apublish(Tick(n=n)) for n in range(3, 6)]  # while down
        restarted = LivePanelApp(Broadcaster(redis_url), auth=basic_auth())
        async with served(restarted, kind, port=port, lifespan=True):
            await collector.wait_events(6)
            published += [await publisher.apublish(Tick(n=n)) for n in range(6, 8)]
            await collector.wait_events(8)
            await client.close()
            await collector.task
        await publisher.close()
        assert [e.id for e in collector.events] == [e.id for e in published]
        assert [e.payload["n"] for e in collector.events] == list(range(8))
        assert not collector.gaps
        assert client.reconnects == 1

    run(scenario(), timeout=40)
    assert not errors_besides_shutdown(server_logs, kind)
