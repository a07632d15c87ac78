"""livepanel.testing: capturing what business code published, and reading TestClient sockets."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from livepanel import (
    BackendUnavailable,
    Broadcaster,
    LivePanelMiddleware,
    MemoryBackend,
    broadcast_event,
)
from livepanel.events import CronExecuted, SessionCreated, SessionKilled
from livepanel.testing import CapturedEvents, capture_events, receive_event, receive_frame


def make_app(broadcaster: Broadcaster | None = None) -> FastAPI:
    """A FastAPI app with the endpoint at /ws and two routes that publish."""
    app = FastAPI()
    app.add_middleware(LivePanelMiddleware, path="/ws", broadcaster=broadcaster, auth=None)
    publish = broadcaster.publish if broadcaster is not None else broadcast_event

    @app.post("/api/sessions/{key}")
    def spawn(key: str) -> dict[str, str]:
        publish(SessionCreated(session_key=key, agent_id="a1", kind="direct"))
        return {"sessionKey": key}

    @app.delete("/api/sessions/{key}")
    async def kill(key: str) -> dict[str, str]:
        publish(SessionKilled(session_key=key, agent_id="a1"))
        return {"sessionKey": key}

    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(make_app()) as test_client:
        yield test_client


# --------------------------------------------------------------------------- capture_events


def test_capture_sees_what_a_sync_route_published(client: TestClient) -> None:
    """A POST handled in the threadpool publishes; the event is captured, typed, with its id."""
    with capture_events() as events:
        assert client.post("/api/sessions/s1").status_code == 200
    (created,) = events.of_type("session.created")
    assert created.payload == {"sessionKey": "s1", "agentId": "a1", "kind": "direct"}
    assert created.id is not None


def test_capture_sees_what_an_async_route_published_in_order(client: TestClient) -> None:
    """Events of sync and async routes come in stream order, with increasing positions."""
    with capture_events() as events:
        client.post("/api/sessions/s1")
        client.delete("/api/sessions/s1")
    assert [e.type for e in events] == ["session.created", "session.killed"]
    assert events.of_type("session.*") == list(events)
    assert events.of_type("cron.*") == []


def test_capture_without_with_testclient() -> None:
    """TestClient without ``with`` opens a loop per request: the capture still sees them."""
    client = TestClient(make_app())
    with capture_events() as events:
        client.post("/api/sessions/s1")
        client.post("/api/sessions/s2")
    assert [e.payload["sessionKey"] for e in events] == ["s1", "s2"]


def test_capture_sees_publishers_in_other_threads() -> None:
    """Four threads publish at once; every event is captured exactly once."""
    with capture_events() as events:
        threads = [
            threading.Thread(
                target=lambda n=n: [
                    broadcast_event(SessionKilled(session_key=f"t{n}-{i}", agent_id="a1"))
                    for i in range(25)
                ]
            )
            for n in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        events.wait_for(100, timeout=5)
    assert len(events) == 100
    assert len({e.id for e in events}) == 100


def test_capture_in_async_code() -> None:
    """``async with`` captures in the running loop; ``wait_for_async`` never blocks it."""
    broadcaster = Broadcaster()

    async def main() -> CapturedEvents:
        async with capture_events(broadcaster) as events:
            await broadcaster.apublish(
                CronExecuted(job_id="j", command="c", exit_code=0, duration_ms=1)
            )
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, broadcaster.publish, SessionKilled(session_key="s", agent_id="a"))
            await events.wait_for_async(1, type="session.killed")
        await broadcaster.close()
        return events

    events = asyncio.run(main())
    assert [e.type for e in events] == ["cron.executed", "session.killed"]


def test_capture_sees_only_what_the_block_published() -> None:
    """Events published before the block, or after it, are not captured."""
    broadcast_event(SessionKilled(session_key="before", agent_id="a1"))
    with capture_events() as events:
        broadcast_event(SessionKilled(session_key="during", agent_id="a1"))
    broadcast_event(SessionKilled(session_key="after", agent_id="a1"))
    assert [e.payload["sessionKey"] for e in events] == ["during"]


def test_capture_resumes_when_it_falls_behind() -> None:
    """A burst larger than the queue closes the capture's subscription; it resumes, losing none."""
    broadcaster = Broadcaster(queue_size=2, history=1000)
    with capture_events(broadcaster) as events:
        for i in range(300):
            broadcaster.publish(SessionKilled(session_key=f"s{i}", agent_id="a1"))
    assert [e.payload["sessionKey"] for e in events] == [f"s{i}" for i in range(300)]


class _Unreachable(MemoryBackend):
    """A backend that cannot start, like a Redis that is down."""

    async def start(self, deliver: Any, control: Any = None) -> str:
        raise BackendUnavailable("no backend here")


def test_capture_raises_when_the_broadcaster_cannot_start() -> None:
    """A capture that cannot subscribe says why at once, in the with statement."""
    with pytest.raises(BackendUnavailable, match="no backend here"):
        with capture_events(Broadcaster(_Unreachable())):
            pytest.fail("the block must not run")


def test_capture_never_hides_the_block_s_exception() -> None:
    """An assertion failing inside the block is what the test reports."""
    with pytest.raises(ZeroDivisionError):
        with capture_events():
            1 / 0  # noqa: B018


def test_wait_for_times_out_with_what_arrived() -> None:
    """wait_for gives up after its timeout and says what it did capture."""
    with capture_events() as events:
        broadcast_event(SessionKilled(session_key="s1", agent_id="a1"))
        began = time.monotonic()
        with pytest.raises(TimeoutError, match=r"0 of 1 'cron\.\*'.*session\.killed"):
            events.wait_for(1, type="cron.*", timeout=0.3)
        assert time.monotonic() - began < 2


def test_livepanel_events_fixture(client: TestClient, livepanel_events: CapturedEvents) -> None:
    """The fixture of ``pytest_plugins = ["livepanel.testing"]`` captures the test's events."""
    client.post("/api/sessions/s9")
    (created,) = livepanel_events.wait_for(1, type="session.created")
    assert created.payload["sessionKey"] == "s9"


# --------------------------------------------------------------------------- receive_*


def test_receive_frame_reads_welcome_first(client: TestClient) -> None:
    """The first frame of a connection is welcome."""
    with client.websocket_connect("/ws") as ws:
        frame = receive_frame(ws)
    assert frame["type"] == "welcome"
    assert frame["payload"]["server"].startswith("livepanel/")


def test_receive_event_skips_welcome_and_reads_the_published_event(client: TestClient) -> None:
    """A POST publishes; receive_event returns it as an Event, welcome skipped."""
    with client.websocket_connect("/ws") as ws:
        receive_frame(ws)  # welcome: the connection is subscribed
        client.post("/api/sessions/s1")
        event = receive_event(ws, type="session.*")
    assert event.type == "session.created"
    assert event.payload["sessionKey"] == "s1"
    assert event.id is not None


def test_receive_event_skips_other_types(client: TestClient) -> None:
    """Events of other types are skipped on the way to the wanted one."""
    with client.websocket_connect("/ws") as ws:
        receive_frame(ws)
        client.post("/api/sessions/s1")
        client.delete("/api/sessions/s1")
        assert receive_event(ws, type="session.killed").payload["sessionKey"] == "s1"


def test_batched_frames_come_out_one_by_one(client: TestClient) -> None:
    """With ?batch=1 several events may share a text frame; each is returned on its own."""
    with client.websocket_connect("/ws?batch=1") as ws:
        receive_frame(ws)
        for i in range(20):
            broadcast_event(SessionKilled(session_key=f"s{i}", agent_id="a1"))
        keys = [receive_event(ws).payload["sessionKey"] for _ in range(20)]
    assert keys == [f"s{i}" for i in range(20)]


def test_a_socket_that_never_receives_times_out_instead_of_hanging(client: TestClient) -> None:
    """A publisher thread keeps publishing what the socket filtered out: a clear TimeoutError."""
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            broadcast_event(SessionKilled(session_key="s", agent_id="a1"))
            stop.wait(0.01)

    publisher = threading.Thread(target=publish, daemon=True)
    with client.websocket_connect("/ws?types=cron.*") as ws:
        publisher.start()
        try:
            began = time.monotonic()
            with pytest.raises(TimeoutError, match=r"no 'cron\.\*' event within 0\.3 s.*welcome"):
                receive_event(ws, type="cron.*", timeout=0.3)
            with pytest.raises(TimeoutError, match=r"no frame from the server within 0\.2 s"):
                receive_frame(ws, timeout=0.2)
            assert time.monotonic() - began < 3
        finally:
            stop.set()
            publisher.join(5)


def test_a_silent_server_times_out_and_the_socket_still_closes() -> None:
    """A route that accepts and never sends: the read times out, and leaving ``with`` does not
    hang on the read left pending."""
    app = FastAPI()

    @app.websocket("/silent")
    async def silent(websocket: WebSocket) -> None:
        await websocket.accept()
        await asyncio.Event().wait()  # never sends, never reads

    outcome: list[BaseException | None] = []

    def scenario() -> None:
        try:
            with TestClient(app) as test_client, test_client.websocket_connect("/silent") as ws:
                with pytest.raises(TimeoutError, match="no frame"):
                    receive_frame(ws, timeout=0.2)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=scenario, daemon=True)
    runner.start()
    runner.join(10)
    assert not runner.is_alive(), "leaving the WebSocket session hung on the pending read"
    assert outcome == [None]


def test_a_timed_out_read_loses_no_frame(client: TestClient) -> None:
    """The read that timed out stays pending; the frame it gets goes to the next call."""
    with client.websocket_connect("/ws") as ws:
        receive_frame(ws)
        with pytest.raises(TimeoutError):
            receive_frame(ws, timeout=0.1)
        broadcast_event(SessionKilled(session_key="late", agent_id="a1"))
        assert receive_event(ws).payload["sessionKey"] == "late"


def test_a_closed_socket_raises_websocket_disconnect() -> None:
    """When the server closes the connection, the reader raises what receive_json() would."""
    broadcaster = Broadcaster()
    with TestClient(make_app(broadcaster)) as client:
        with client.websocket_connect("/ws") as ws:
            receive_frame(ws)
            client.portal.call(broadcaster.close)  # type: ignore[union-attr]
            with pytest.raises(WebSocketDisconnect) as info:
                receive_frame(ws)
    assert info.value.code == 1001
