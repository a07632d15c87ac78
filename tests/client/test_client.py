"""The Python client against the real endpoint on uvicorn (both WebSocket stacks) and hypercorn."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from livepanel import Broadcaster, Event, LivePanelApp
from livepanel.client import (
    AuthenticationError,
    ConnectionFailed,
    PermissionDenied,
    ResumeUnavailable,
    connect,
)
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
from tests.servers import SERVERS


def killed(n: int) -> dict[str, str]:
    return {"sessionKey": f"s{n}", "agentId": "a1"}


def publish_killed(broadcaster: Broadcaster, numbers: range) -> list[Event]:
    return [broadcaster.publish("session.killed", killed(n)) for n in numbers]


@pytest.mark.parametrize("kind", SERVERS)
def test_receives_published_events_in_order(kind: str, server_logs: Any) -> None:
    """Events published after connecting arrive whole, in order, with their ids."""
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=basic_auth())

    async def scenario() -> None:
        async with (
            served(app, kind) as server,
            connect(server.ws_url + "/", username=USER, password=PASSWORD, **FAST) as client,
        ):
            assert client.status == "open"
            assert client.connection_id
            published = publish_killed(broadcaster, range(5))
            received = []
            async for event in client:
                received.append(event)
                if len(received) == len(published):
                    break
            assert received == published
            assert client.last_event_id == published[-1].id
        assert client.status == "closed"

    run(scenario())
    assert not server_logs.errors()


@pytest.mark.parametrize("kind", SERVERS)
def test_types_filter_only_yields_matching_events(kind: str, server_logs: Any) -> None:
    """With types=["session.*"], other event types never reach the client."""
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=basic_auth())

    async def scenario() -> None:
        async with (
            served(app, kind) as server,
            connect(
                server.ws_url + "/",
                username=USER,
                password=PASSWORD,
                types=["session.*"],
                **FAST,
            ) as client,
        ):
            broadcaster.publish(
                "gateway.status", {"status": "running", "version": "1", "uptime": 1}
            )
            wanted = broadcaster.publish(
                "session.created", {"sessionKey": "s1", "agentId": "a1", "kind": "direct"}
            )
            broadcaster.publish(
                "agent.status", {"agentId": "a1", "status": "idle", "activeSessionCount": 0}
            )
            last = broadcaster.publish("session.killed", killed(1))
            received = []
            async for event in client:
                received.append(event)
                if event.id == last.id:
                    break
            assert [e.type for e in received] == ["session.created", "session.killed"]
            assert received[0] == wanted

    run(scenario())
    assert not server_logs.errors()


@pytest.mark.parametrize("kind", SERVERS)
def test_resumes_after_server_restart_with_nothing_missed_or_repeated(
    kind: str, server_logs: Any
) -> None:
    """Events published while the server is down arrive after it restarts, each exactly once."""
    broadcaster = Broadcaster()  # the same memory backend across the restart: same epoch
    app = LivePanelApp(broadcaster, auth=basic_auth())

    async def scenario() -> None:
        async with served(app, kind) as first:
            port = first.port
            client = connect(
                first.ws_url + "/", username=USER, password=PASSWORD, max_retries=100, **FAST
            )
            await client.__aenter__()
            collector = Collector(client)
            published = publish_killed(broadcaster, range(3))
            await collector.wait_events(3)
        published += publish_killed(broadcaster, range(3, 6))  # while nothing serves
        async with served(app, kind, port=port):
            await collector.wait_events(6)
            published += publish_killed(broadcaster, range(6, 8))
            await collector.wait_events(8)
            await client.close()
            await collector.task
        assert collector.events == published
        assert not collector.gaps
        assert client.reconnects == 1

    run(scenario(), timeout=30)
    assert not errors_besides_shutdown(server_logs, kind)


@pytest.mark.parametrize("kind", SERVERS)
def test_new_epoch_after_restart_surfaces_resume_unavailable(kind: str, server_logs: Any) -> None:
    """A restarted server with a fresh broadcaster cannot resume: the gap is raised, then live."""
    old = Broadcaster()

    async def scenario() -> None:
        async with served(LivePanelApp(old, auth=basic_auth()), kind) as first:
            port = first.port
            client = connect(
                first.ws_url + "/", username=USER, password=PASSWORD, max_retries=100, **FAST
            )
            await client.__aenter__()
            collector = Collector(client)
            before = publish_killed(old, range(2))
            await collector.wait_events(2)
        new = Broadcaster()
        async with served(LivePanelApp(new, auth=basic_auth()), kind, port=port):
            await collector.wait_until(lambda: bool(collector.gaps))
            after = publish_killed(new, range(2))
            await collector.wait_events(4)
            await client.close()
            await collector.task
        assert collector.items == [*before, collector.gaps[0], *after]
        gap = collector.gaps[0]
        assert isinstance(gap, ResumeUnavailable)
        assert gap.since == before[-1].id
        assert gap.last_event_id is not None
        assert gap.last_event_id.split(":")[0] != before[-1].id.split(":")[0]  # type: ignore[union-attr]

    run(scenario(), timeout=30)
    assert not errors_besides_shutdown(server_logs, kind)


@pytest.mark.parametrize("kind", SERVERS)
def test_wrong_password_raises_authentication_error_without_retrying(
    kind: str, server_logs: Any
) -> None:
    """401 raises AuthenticationError at once; the server sees one handshake."""
    calls: list[str] = []
    app = LivePanelApp(Broadcaster(), auth=basic_auth(calls))

    async def scenario() -> None:
        async with served(app, kind) as server:
            client = connect(server.ws_url + "/", username=USER, password="wrong", **FAST)
            with pytest.raises(AuthenticationError, match="401") as raised:
                await client.__aenter__()
            assert raised.value.status == 401
            assert raised.value.code == "unauthorized"
            assert client.status == "auth_failed"
            assert [e async for e in client] == []
        assert calls == [USER]

    run(scenario())
    assert not server_logs.errors()


@pytest.mark.parametrize("kind", SERVERS)
def test_forbidden_user_raises_permission_denied_without_retrying(
    kind: str, server_logs: Any
) -> None:
    """403 from authorize() raises PermissionDenied at once; the server sees one handshake."""
    calls: list[str] = []

    def authorize(principal: Any, scope: Any) -> bool:
        calls.append(str(principal))
        return False

    app = LivePanelApp(Broadcaster(), auth=basic_auth(), authorize=authorize)

    async def scenario() -> None:
        async with served(app, kind) as server:
            with pytest.raises(PermissionDenied, match="403") as raised:
                async with connect(server.ws_url + "/", username=USER, password=PASSWORD):
                    pass
            assert raised.value.code == "forbidden"
        assert calls == [USER]

    run(scenario())
    assert not server_logs.errors()


def test_credentials_refused_on_reconnect_are_raised_without_retrying(server_logs: Any) -> None:
    """A server that restarts refusing the user makes the iterator raise after one handshake."""
    broadcaster = Broadcaster()
    calls: list[str] = []

    async def scenario() -> None:
        async with served(LivePanelApp(broadcaster, auth=basic_auth()), "uvicorn-wsproto") as up:
            port = up.port
            client = connect(
                up.ws_url + "/", username=USER, password=PASSWORD, max_retries=100, **FAST
            )
            await client.__aenter__()
            collector = Collector(client)
            publish_killed(broadcaster, range(1))
            await collector.wait_events(1)
        refusing = LivePanelApp(broadcaster, auth=basic_auth(calls, accept=False))
        async with served(refusing, "uvicorn-wsproto", port=port):
            with pytest.raises(AuthenticationError):
                await collector.task
            assert client.status == "auth_failed"
        assert calls == [USER]
        await client.close()

    run(scenario(), timeout=30)
    assert not server_logs.errors()


def test_denial_without_the_http_response_extension_is_probed_for_its_status(
    server_logs: Any,
) -> None:
    """A server that can only answer 403 is asked with a plain GET: 401 is still a 401."""
    inner = LivePanelApp(Broadcaster(), auth=basic_auth())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await inner({**scope, "extensions": {}}, receive, send)

    async def scenario() -> None:
        async with served(app, "uvicorn-websockets") as server:
            with pytest.raises(AuthenticationError):
                async with connect(server.ws_url + "/", username=USER, password="wrong"):
                    pass

    run(scenario())
    assert not server_logs.errors()


@pytest.mark.parametrize("kind", SERVERS)
def test_wss_with_a_trusted_self_signed_certificate(
    kind: str, tls_certificate: tuple[str, str], server_logs: Any
) -> None:
    """wss:// works with an SSLContext trusting the server's certificate."""
    certfile, keyfile = tls_certificate
    broadcaster = Broadcaster()
    app = LivePanelApp(broadcaster, auth=basic_auth(), require_tls=True)
    context = ssl.create_default_context(cafile=certfile)

    async def scenario() -> None:
        async with (
            served(app, kind, certfile=certfile, keyfile=keyfile) as server,
            connect(
                server.ws_url + "/", username=USER, password=PASSWORD, ssl=context, **FAST
            ) as client,
        ):
            assert server.ws_url.startswith("wss://")
            (published,) = publish_killed(broadcaster, range(1))
            async for event in client:
                assert event == published
                break

    run(scenario())
    assert not server_logs.errors()


def test_wss_verifies_certificates_with_the_system_cas_by_default(
    tls_certificate: tuple[str, str],
) -> None:
    """Without ssl=, a self-signed certificate is refused: verification is on."""
    certfile, keyfile = tls_certificate
    app = LivePanelApp(Broadcaster(), auth=basic_auth())

    async def scenario() -> None:
        async with served(app, "uvicorn-wsproto", certfile=certfile, keyfile=keyfile) as server:
            with pytest.raises(ConnectionFailed, match="CERTIFICATE_VERIFY_FAILED"):
                async with connect(server.ws_url + "/", username=USER, password=PASSWORD):
                    pass

    run(scenario())
