"""The Python client's state: ``connect(url, state=True)``, and ``livepanel tail --state``."""

from __future__ import annotations

import json
from typing import Any

from livepanel import Broadcaster, LivePanelApp
from livepanel.client import connect
from tests.client.helpers import FAST, PASSWORD, USER, Collector, basic_auth, run, served
from tests.client.test_cli import PASSWORD_VAR, Tail, broadcaster, server, tails  # noqa: F401
from tests.servers import RunningServer, free_port


def created(b: Broadcaster, key: str) -> None:
    b.publish("session.created", {"sessionKey": key, "agentId": "a1", "kind": "direct"})


def killed(b: Broadcaster, key: str) -> None:
    b.publish("session.killed", {"sessionKey": key, "agentId": "a1"})


def ids(collections: dict[str, Any]) -> dict[str, list[str]]:
    return {name: [e.id for e in entries.values()] for name, entries in collections.items()}


def server_ids(state: dict[str, Any]) -> dict[str, list[str]]:
    return {
        name: [e["id"] for e in collection["entries"]]
        for name, collection in state["collections"].items()
    }


def test_the_client_loads_the_state_then_keeps_it_with_live_events() -> None:
    """state=True: the state frame is yielded first and loads client.state; events update it."""

    async def scenario() -> None:
        b = Broadcaster()
        for key in ("s1", "s2", "s3"):
            created(b, key)
        killed(b, "s2")
        app = LivePanelApp(b, auth=basic_auth())
        async with served(app, "uvicorn-wsproto") as srv:
            url = srv.ws_url + "/"
            async with connect(url, username=USER, password=PASSWORD, state=True) as client:
                seen = Collector(client)
                await seen.wait_events(1)
                first = seen.events[0]
                assert (first.type, first.id) == ("state", None)
                assert client.state is not None
                assert list(client.state.collections["sessions"]) == ["s1", "s3"]
                killed(b, "s1")
                created(b, "s4")
                await seen.wait_events(3)
                assert ids(client.state.collections) == server_ids(await b.state())
                assert client.last_event_id == b.last_event_id
                seen.task.cancel()

    run(scenario())


def test_after_a_server_restart_the_client_gets_the_new_state_not_a_gap() -> None:
    """A new epoch (memory backend restarted): a new state frame, no ResumeUnavailable."""

    async def scenario() -> None:
        port = free_port()
        first = Broadcaster()
        created(first, "old")
        async with served(LivePanelApp(first, auth=basic_auth()), "uvicorn-wsproto", port=port):
            url = f"ws://127.0.0.1:{port}/"
            client = connect(url, username=USER, password=PASSWORD, state=True, **FAST)
            await client.__aenter__()
            seen = Collector(client)
            await seen.wait_events(1)
        second = Broadcaster()
        created(second, "new")
        async with served(LivePanelApp(second, auth=basic_auth()), "uvicorn-wsproto", port=port):
            await seen.wait_events(2, timeout=15)
            assert client.state is not None
            assert list(client.state.collections["sessions"]) == ["new"]
            assert seen.gaps == []
            await client.close()
            seen.task.cancel()

    run(scenario(), timeout=40)


def test_tail_state_prints_the_snapshot_first(
    server: RunningServer,  # noqa: F811
    broadcaster: Broadcaster,  # noqa: F811
    tails: list[Tail],  # noqa: F811
) -> None:
    """livepanel tail --state --json: the state frame, then each event."""
    created(broadcaster, "s1")
    tail = Tail(
        server.ws_url + "/", "-u", USER, "--password-env", PASSWORD_VAR, "--json", "--state"
    )
    tails.append(tail)
    (line,) = tail.lines(1)
    state = json.loads(line)
    assert state["type"] == "state"
    entries = state["payload"]["collections"]["sessions"]["entries"]
    assert [e["payload"]["sessionKey"] for e in entries] == ["s1"]
    killed(broadcaster, "s1")
    (line,) = tail.lines(1)
    assert json.loads(line)["type"] == "session.killed"


def test_tail_state_without_json_prints_a_readable_snapshot(
    server: RunningServer,  # noqa: F811
    broadcaster: Broadcaster,  # noqa: F811
    tails: list[Tail],  # noqa: F811
) -> None:
    """Readable: the position, each collection with its size, one line per entry."""
    created(broadcaster, "s1")
    tail = Tail(server.ws_url + "/", "-u", USER, "--password-env", PASSWORD_VAR, "--state")
    tails.append(tail)
    lines = tail.lines(3)
    assert lines[0] == f"state at {broadcaster.last_event_id}\n"
    assert lines[1] == "  sessions (1)\n"
    assert "session.created  sessionKey=s1" in lines[2]
