"""Reconnect, resume, heartbeat and close-code rules, against a scripted wsproto server."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from wsproto.events import Pong, TextMessage

from livepanel.client import (
    Client,
    ConnectionFailed,
    HandshakeRejected,
    OpenTimeout,
    ResumeUnavailable,
    connect,
)
from tests.client.helpers import (
    FAST,
    Collector,
    Peer,
    ScriptedServer,
    event,
    frame,
    run,
    welcome,
)


@pytest.mark.parametrize("code", [1001, 1011, 1012, 1013])
def test_abnormal_close_reconnects_resuming_after_the_last_event(code: int) -> None:
    """After close 1001/1011/1012/1013 the client reconnects with since = the last id seen."""

    async def first(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome("e1:0"), event("e1:1"), event("e1:2"))
        await peer.close(code)

    async def second(peer: Peer) -> None:
        await peer.accept()
        assert peer.query["since"] == "e1:2"
        await peer.send(welcome("e1:3"))
        await peer.send(event("e1:3"))
        await peer.close(1000)

    async def scenario() -> None:
        async with ScriptedServer(first, second) as server, connect(server.url, **FAST) as client:
            ids = [e.id async for e in client]
            assert ids == ["e1:1", "e1:2", "e1:3"]
            assert client.reconnects == 1
            assert client.status == "closed"

    run(scenario())


def test_clean_close_ends_the_iteration_without_reconnecting() -> None:
    """Close code 1000 from the server ends ``async for``; no second connection is made."""

    async def only(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome(), event("e1:1"))
        await peer.close(1000)

    async def scenario() -> None:
        async with ScriptedServer(only) as server, connect(server.url, **FAST) as client:
            assert [e.id async for e in client] == ["e1:1"]
            assert len(server.peers) == 1
            assert client.status == "closed"

    run(scenario())


def test_resume_starts_from_welcome_last_event_id_when_no_event_arrived() -> None:
    """With no event received yet, the reconnect resumes after welcome.lastEventId."""

    async def first(peer: Peer) -> None:
        await peer.accept()
        assert "since" not in peer.query
        await peer.send(welcome("e1:7"))
        await peer.close(1001)

    async def second(peer: Peer) -> None:
        await peer.accept()
        assert peer.query["since"] == "e1:7"
        await peer.send(welcome("e1:7"), event("e1:8"))
        await peer.close(1000)

    async def scenario() -> None:
        async with ScriptedServer(first, second) as server, connect(server.url, **FAST) as client:
            assert [e.id async for e in client] == ["e1:8"]

    run(scenario())


def test_connect_url_asks_for_types_since_and_batching() -> None:
    """types, since and batch=1 travel in the query, next to the URL's own parameters."""

    async def only(peer: Peer) -> None:
        await peer.accept()
        assert peer.query == {
            "tenant": "t1",
            "types": "session.*,agent.status",
            "since": "e1:4",
            "batch": "1",
        }
        assert peer.header("authorization") == "Basic dXNlcjpzZWNyZXQ="
        assert peer.header("origin") == "https://panel.example.test"
        await peer.send(welcome("e1:9"))
        await peer.close(1000)

    async def scenario() -> None:
        async with (
            ScriptedServer(only) as server,
            connect(
                server.url + "?tenant=t1",
                username="user",
                password="secret",
                origin="https://panel.example.test",
                types=["session.*", "agent.status"],
                since="e1:4",
            ) as client,
        ):
            assert [e async for e in client] == []

    run(scenario())


def test_two_silent_heartbeat_intervals_force_a_reconnect() -> None:
    """No frame within two heartbeat intervals: the client drops the connection and resumes."""

    async def silent(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome("e1:0", heartbeat=0.1), event("e1:1"))
        await peer.hold()

    async def second(peer: Peer) -> None:
        await peer.accept()
        assert peer.query["since"] == "e1:1"
        await peer.send(welcome("e1:1"), event("e1:2"))
        await peer.close(1000)

    async def scenario() -> None:
        async with ScriptedServer(silent, second) as server, connect(server.url, **FAST) as client:
            started = time.monotonic()
            assert [e.id async for e in client] == ["e1:1", "e1:2"]
            assert 0.2 <= time.monotonic() - started < 3.0
            assert client.reconnects == 1

    run(scenario())


def test_server_heartbeat_frames_keep_a_connection_alive() -> None:
    """JSON ping frames within the interval keep the connection; they are not yielded."""

    async def only(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome("e1:0", heartbeat=0.2))
        for _ in range(5):  # 0.5 s in all: longer than two intervals
            await asyncio.sleep(0.1)
            await peer.send(frame("ping", {}))
        await peer.send(event("e1:1"))
        await peer.close(1000)

    async def scenario() -> None:
        async with ScriptedServer(only) as server, connect(server.url, **FAST) as client:
            assert [e.id async for e in client] == ["e1:1"]
            assert client.reconnects == 0

    run(scenario())


def test_protocol_ping_is_answered_with_pong() -> None:
    """A WebSocket-level Ping gets a Pong with the same payload while the client iterates."""

    async def only(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome())
        await peer.ping(b"are you there")
        pong = await peer.next(Pong)
        assert pong.payload == b"are you there"
        await peer.send(event("e1:1"))
        await peer.close(1000)

    async def scenario() -> None:
        async with ScriptedServer(only) as server, connect(server.url, **FAST) as client:
            assert [e.id async for e in client] == ["e1:1"]

    run(scenario())


def test_resume_unavailable_is_raised_at_the_gap_and_the_stream_goes_on() -> None:
    """The iterator raises ResumeUnavailable after the events before the gap; then goes on."""

    async def first(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome("e1:0"), event("e1:1"))
        await peer.close(1001)

    async def second(peer: Peer) -> None:
        await peer.accept()
        assert peer.query["since"] == "e1:1"
        error = frame("error", {"code": "resume_unavailable", "message": "refetch"})
        await peer.send(welcome("e2:5"), error, event("e2:6"))
        await peer.close(1001)

    async def third(peer: Peer) -> None:
        await peer.accept()
        assert peer.query["since"] == "e2:6"
        await peer.send(welcome("e2:6"), event("e2:7"))
        await peer.close(1000)

    async def scenario() -> None:
        async with (
            ScriptedServer(first, second, third) as server,
            connect(server.url, **FAST) as client,
        ):
            collector = Collector(client)
            await collector.task
        assert [getattr(i, "id", None) for i in collector.items] == [
            "e1:1",
            None,
            "e2:6",
            "e2:7",
        ]
        (gap,) = collector.gaps
        assert gap.since == "e1:1"
        assert gap.last_event_id == "e2:5"
        assert "refetch" in str(gap)

    run(scenario())


def test_resume_unavailable_after_a_gap_resumes_from_the_new_welcome() -> None:
    """A reconnect right after a gap asks for the new stream's position, not the lost id."""

    async def first(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome("e1:3"))
        await peer.close(1001)

    async def second(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome("e2:9"), frame("error", {"code": "resume_unavailable"}))
        await peer.close(1012)

    async def third(peer: Peer) -> None:
        await peer.accept()
        assert peer.query["since"] == "e2:9"
        await peer.send(welcome("e2:9"))
        await peer.close(1000)

    async def scenario() -> None:
        async with (
            ScriptedServer(first, second, third) as server,
            connect(server.url, **FAST) as client,
        ):
            with pytest.raises(ResumeUnavailable):
                await client.__anext__()
            assert [e async for e in client] == []
            assert len(server.peers) == 3

    run(scenario())


def test_server_that_never_answers_the_handshake_times_out() -> None:
    """A server that accepts TCP but stays silent fails with OpenTimeout within open_timeout."""

    async def scenario() -> None:
        async with ScriptedServer(lambda peer: peer.hold()) as server:
            started = time.monotonic()
            with pytest.raises(OpenTimeout, match="open_timeout"):
                async with connect(server.url, open_timeout=0.3):
                    pass
            assert time.monotonic() - started < 2.0

    run(scenario())


def test_refused_tcp_connection_fails_at_once() -> None:
    """The first connection is not retried: a closed port raises ConnectionFailed."""

    async def scenario() -> None:
        async with ScriptedServer() as server:
            url = server.url
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            async with connect(url, **FAST):
                pass

    run(scenario())


def test_gives_up_after_max_retries() -> None:
    """Each failed reconnection counts; after max_retries in a row, ConnectionFailed."""

    async def first(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome(), event("e1:1"))
        await peer.close(1011)

    async def busy(peer: Peer) -> None:
        await peer.reject(503, b'{"error":"busy","message":"later"}')

    async def scenario() -> None:
        async with (
            ScriptedServer(first, busy, busy, busy) as server,
            connect(server.url, max_retries=3, **FAST) as client,
        ):
            collector = Collector(client)
            with pytest.raises(ConnectionFailed, match="gave up after 3"):
                await collector.task
            assert [e.id for e in collector.events] == ["e1:1"]
            assert client.status == "closed"
            assert len(server.peers) == 4

    run(scenario())


def test_other_http_errors_on_reconnect_are_not_retried() -> None:
    """A 404 on reconnect means a wrong URL, not a busy server: raised at once."""

    async def first(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome())
        await peer.close(1001)

    async def gone(peer: Peer) -> None:
        await peer.reject(404)

    async def scenario() -> None:
        async with (
            ScriptedServer(first, gone, gone) as server,
            connect(server.url, **FAST) as client,
        ):
            with pytest.raises(HandshakeRejected) as raised:
                await client.__anext__()
            assert raised.value.status == 404
            assert len(server.peers) == 2

    run(scenario())


def test_reconnect_false_raises_instead_of_reconnecting() -> None:
    """With reconnect=False a lost connection raises ConnectionFailed."""

    async def only(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome())
        await peer.close(1013)

    async def scenario() -> None:
        async with (
            ScriptedServer(only) as server,
            connect(server.url, reconnect=False, **FAST) as client,
        ):
            with pytest.raises(ConnectionFailed, match="1013"):
                await client.__anext__()

    run(scenario())


def test_acks_are_coalesced_and_the_last_one_is_sent_on_close() -> None:
    """Acking a burst sends few ack frames, the newest last; close() flushes a pending one."""
    received: list[dict[str, Any]] = []

    async def only(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome(), *[event(f"e1:{n}") for n in range(1, 51)])
        received.extend(await peer.messages())

    async def scenario() -> None:
        async with ScriptedServer(only) as server:
            async with connect(server.url, **FAST) as client:
                async for item in client:
                    await client.ack(item.id)
                    if item.id == "e1:50":
                        break
            await server.finished()
        acks = [m["payload"]["id"] for m in received if m["type"] == "ack"]
        assert 1 <= len(acks) <= 5
        assert acks[-1] == "e1:50"

    run(scenario())


def test_subscribe_sends_the_filter_and_keeps_it_for_reconnects() -> None:
    """subscribe() replaces the filter now (with since) and on every later reconnect."""
    received: list[dict[str, object]] = []

    async def first(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome("e1:0"), event("e1:1"))
        message = await peer.next(TextMessage)
        received.append(json.loads(message.data))
        await peer.close(1001)

    async def second(peer: Peer) -> None:
        await peer.accept()
        assert peer.query["types"] == "cron.*"
        assert peer.query["since"] == "e1:0"
        await peer.send(welcome("e1:1"))
        await peer.close(1000)

    async def scenario() -> None:
        async with ScriptedServer(first, second) as server, connect(server.url, **FAST) as client:
            assert (await client.__anext__()).id == "e1:1"
            await client.subscribe(["cron.*"], since="e1:0")
            assert [e async for e in client] == []
        assert received == [
            {"type": "subscribe", "payload": {"types": ["cron.*"], "since": "e1:0"}}
        ]

    run(scenario())


def test_close_from_another_task_ends_the_iteration() -> None:
    """close() while another task waits in ``async for`` ends that loop cleanly."""

    async def only(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome())
        await peer.messages()

    async def scenario() -> None:
        async with ScriptedServer(only) as server:
            client = connect(server.url, **FAST)
            await client.__aenter__()
            collector = Collector(client)
            await asyncio.sleep(0)  # let it start waiting
            await asyncio.wait_for(client.close(), 3.0)
            await asyncio.wait_for(collector.task, 3.0)
            assert client.status == "closed"

    run(scenario())


def test_close_while_waiting_for_welcome_ends_the_iteration_quietly() -> None:
    """close() while the first connection still waits for welcome: the loop just ends."""
    accepted = asyncio.Event()

    async def silent(peer: Peer) -> None:
        await peer.accept()
        accepted.set()
        await peer.hold()

    async def scenario() -> None:
        async with ScriptedServer(silent) as server:
            client = connect(server.url, **FAST)
            collector = Collector(client)  # connects lazily, then waits for welcome
            await asyncio.wait_for(accepted.wait(), 3.0)
            assert client.status == "connecting"
            await asyncio.wait_for(client.close(), 5.0)
            await asyncio.wait_for(collector.task, 5.0)  # no ConnectionFailed raised
            assert collector.items == []
            assert client.status == "closed"
            assert len(server.peers) == 1  # and no reconnect

    run(scenario())


def test_status_goes_connecting_open_reconnecting_open_closed() -> None:
    """The status the client reports at each step of its life."""
    seen: list[str] = []
    clients: list[Client] = []
    checked = asyncio.Event()

    async def first(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome("e1:0"), event("e1:1"))
        await checked.wait()
        await peer.close(1011)

    async def second(peer: Peer) -> None:
        seen.append(clients[0].status)  # the client is reopening its lost connection
        await peer.accept()
        await peer.send(welcome("e1:1"), event("e1:2"))
        await peer.messages()

    async def scenario() -> None:
        async with ScriptedServer(first, second) as server:
            client = connect(server.url, **FAST)
            clients.append(client)
            assert client.status == "connecting"
            await client.__aenter__()
            assert client.status == "open"
            checked.set()
            collector = Collector(client)
            await collector.wait_events(2)
            assert seen == ["reconnecting"]
            assert client.status == "open"
            await asyncio.wait_for(client.close(), 5.0)
            await asyncio.wait_for(collector.task, 5.0)
            assert client.status == "closed"
            await client.close()  # a second close() is a no-op
            assert client.status == "closed"

    run(scenario())


def test_iterating_without_async_with_connects_lazily() -> None:
    """``async for`` on a client not yet entered opens the connection itself."""

    async def only(peer: Peer) -> None:
        await peer.accept()
        await peer.send(welcome(), event("e1:1"))
        await peer.close(1000)

    async def scenario() -> None:
        async with ScriptedServer(only) as server:
            client = connect(server.url, **FAST)
            try:
                assert [e.id async for e in client] == ["e1:1"]
            finally:
                await client.close()

    run(scenario())


def test_connect_refuses_bad_arguments() -> None:
    """Wrong schemes, ssl with ws://, and a malformed since fail at once with ValueError."""
    import ssl

    with pytest.raises(ValueError, match="ws:// or wss://"):
        connect("http://localhost/ws")
    with pytest.raises(ValueError, match="wss://"):
        connect("ws://localhost/ws", ssl=ssl.create_default_context())
    with pytest.raises(ValueError, match="malformed event id"):
        connect("ws://localhost/ws", since="yesterday")
    with pytest.raises(ValueError, match="username"):
        connect("ws://localhost/ws", username="a:b", password="c")
