"""The demo dashboard's server: Basic Auth everywhere, REST that broadcasts, the state in the
stream."""

from __future__ import annotations

import base64
import io
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

import livepanel.demo
import livepanel.demo.__main__
from livepanel import Broadcaster, Event
from livepanel.demo import DemoApp, credentials
from livepanel.demo.gateway import AGENTS, SimulatedGateway
from livepanel.state import ClientState
from tests.servers import RunningServer, run_server

AUTH = ("admin", "pa:ss")
HEADERS = {"Authorization": "Basic " + base64.b64encode(b"admin:pa:ss").decode()}


@pytest.fixture
def demo() -> Iterator[tuple[DemoApp, RunningServer]]:
    app = DemoApp(username=AUTH[0], password=AUTH[1], interval=0)
    with run_server(app, "uvicorn-wsproto", lifespan=True) as server:
        yield app, server


@pytest.fixture
def http(demo: tuple[DemoApp, RunningServer]) -> Iterator[httpx.Client]:
    _, server = demo
    with httpx.Client(base_url=server.http_url, auth=AUTH, timeout=5) as client:
        yield client


def origin(http: httpx.Client) -> dict[str, str]:
    return {"Origin": str(http.base_url).rstrip("/")}


def frames(ws: ClientConnection, until: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Frames up to and including the first of type ``until`` (batches split)."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        text = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        for line in str(text).split("\n"):
            seen.append(json.loads(line))
            if seen[-1]["type"] == until:
                return seen


def state_of(server: RunningServer) -> dict[str, Any]:
    """The demo's state as a page connecting now gets it (``?state=1``)."""
    with connect(f"{server.ws_url}/ws?state=1", additional_headers=HEADERS) as ws:
        payload: dict[str, Any] = frames(ws, "state")[-1]["payload"]
        return payload


def keys(state: dict[str, Any], collection: str, key: str) -> list[str]:
    return [e["payload"][key] for e in state["collections"][collection]["entries"]]


def test_every_route_needs_the_credentials(http: httpx.Client) -> None:
    """Without (or with wrong) Basic credentials every page and API answers 401 with a challenge."""
    for path in ("/", "/livepanel.js", "/static/dashboard.js", "/api/stats"):
        for auth in (None, ("admin", "wrong")):
            response = httpx.get(f"{http.base_url}{path}", auth=auth)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith('Basic realm="livepanel demo"')


def test_serves_the_page_the_client_and_the_assets(http: httpx.Client) -> None:
    """The page comes with a strict CSP; scripts and styles with their types."""
    page = http.get("/")
    assert page.status_code == 200
    assert "ClawPanel" in page.text
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    types = {
        "/livepanel.js": "text/javascript",
        "/static/dashboard.js": "text/javascript",
        "/static/dashboard.css": "text/css",
    }
    for path, kind in types.items():
        assert http.get(path).headers["content-type"].startswith(kind), path
    assert http.get("/nope").status_code == 404


def test_the_state_starts_from_the_gateway_announcement(
    demo: tuple[DemoApp, RunningServer], http: httpx.Client
) -> None:
    """At start the gateway publishes its status and every agent's: the state has them."""
    state = state_of(demo[1])
    assert [e["payload"]["status"] for e in state["collections"]["gateway"]["entries"]] == [
        "running"
    ]
    assert sorted(keys(state, "agents", "agentId")) == sorted(AGENTS)
    assert keys(state, "sessions", "sessionKey") == []
    assert state["lastEventId"]
    assert http.get("/api/snapshot").status_code == 404  # no snapshot route of the demo's own


def test_spawn_and_kill_broadcast_and_the_state_follows(
    demo: tuple[DemoApp, RunningServer], http: httpx.Client
) -> None:
    """POST spawn/kill reach a connected client as events, and the state agrees."""
    _, server = demo
    since = state_of(server)["lastEventId"]
    url = f"{server.ws_url}/ws?since={since}"
    with connect(url, additional_headers=HEADERS) as ws:
        frames(ws, "welcome")
        spawned = http.post(
            "/api/sessions/spawn",
            json={"agentId": "vega", "kind": "subagent", "label": "triage"},
            headers=origin(http),
        )
        assert spawned.status_code == 201
        key = spawned.json()["sessionKey"]
        created = frames(ws, "session.created")[-1]
        assert created["payload"] == {
            "sessionKey": key,
            "agentId": "vega",
            "kind": "subagent",
            "label": "triage",
        }
        status = frames(ws, "agent.status")[-1]["payload"]
        assert (status["agentId"], status["status"], status["activeSessionCount"]) == (
            "vega",
            "running",
            1,
        )
        assert key in keys(state_of(server), "sessions", "sessionKey")

        killed = http.post(f"/api/sessions/{key}/kill", headers=origin(http))
        assert killed.json() == {"sessionKey": key}
        assert frames(ws, "session.killed")[-1]["payload"]["sessionKey"] == key
        frames(ws, "agent.status")
        assert key not in keys(state_of(server), "sessions", "sessionKey")


def test_bad_session_requests_say_what_is_wrong(http: httpx.Client) -> None:
    """Unknown agents, kinds and sessions, bodies that are not JSON objects, wrong methods."""
    headers = origin(http)
    post = http.post
    assert (
        post("/api/sessions/spawn", json={"agentId": "nobody"}, headers=headers).status_code == 400
    )
    assert post("/api/sessions/spawn", json={"kind": "batch"}, headers=headers).status_code == 400
    assert post("/api/sessions/spawn", json=[1], headers=headers).status_code == 400
    assert post("/api/sessions/spawn", content=b"{", headers=headers).status_code == 400
    assert post("/api/sessions/spawn", content=b"x" * 20000, headers=headers).status_code == 400
    assert post("/api/sessions/atlas:direct:0/kill", headers=headers).status_code == 404
    assert post("/api/sessions/whatever", headers=headers).status_code == 404
    assert http.get("/api/sessions/spawn").status_code == 405
    assert http.post("/api/stats", headers=headers).status_code == 405
    default = post("/api/sessions/spawn", headers=headers)
    assert default.status_code == 201
    assert default.json()["sessionKey"].startswith(f"{AGENTS[0]}:direct:")


def test_cross_site_posts_are_refused(http: httpx.Client) -> None:
    """A browser on another site cannot spawn with the user's cached credentials."""
    response = http.post("/api/sessions/spawn", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert response.json()["error"] == "origin_not_allowed"


def test_stats_count_websocket_handshakes_and_http_probes(
    demo: tuple[DemoApp, RunningServer], http: httpx.Client
) -> None:
    """/api/stats tells how many handshakes and probes reached /ws, accepted or not."""
    _, server = demo
    with connect(f"{server.ws_url}/ws", additional_headers=HEADERS) as ws:
        frames(ws, "welcome")
    with pytest.raises(Exception, match="401"):
        connect(f"{server.ws_url}/ws")
    assert httpx.get(f"{server.http_url}/ws").status_code == 401
    assert http.get("/ws").status_code == 426
    stats = http.get("/api/stats").json()
    assert (stats["handshakes"], stats["probes"]) == (2, 2)
    assert stats["published"] >= 1 + len(AGENTS)


def test_a_state_plus_the_events_after_it_equals_a_later_state() -> None:
    """Folding the live events after a state frame into it gives the server's later state."""
    app = DemoApp(username=AUTH[0], password=AUTH[1], interval=0.01)
    with run_server(app, "uvicorn-wsproto", lifespan=True) as server:
        state = ClientState()
        with connect(f"{server.ws_url}/ws?state=1", additional_headers=HEADERS) as ws:
            first = state.load(frames(ws, "state")[-1]["payload"])
            time.sleep(0.5)
            later = state_of(server)
            assert later["lastEventId"] != first
            while state.last_event_id != later["lastEventId"]:
                for line in str(ws.recv(timeout=5)).split("\n"):
                    frame = json.loads(line)
                    if "id" in frame:
                        state.apply(Event.from_dict(frame))
        for name, collection in later["collections"].items():
            assert [e.id for e in state.collections[name].values()] == [
                e["id"] for e in collection["entries"]
            ], name
        assert len(later["collections"]["cronRuns"]["entries"]) <= 20


class _Recorder:
    """Stands in for a Broadcaster: keeps what the gateway publishes."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def publish(self, event: Any) -> None:
        self.events.append(event)


def test_the_simulated_gateway_publishes_every_kind_of_event() -> None:
    """Over a few hundred steps: all five types, at most six own sessions, counts that add up."""
    recorder = _Recorder()
    gateway = SimulatedGateway(recorder, rng=random.Random(7))  # type: ignore[arg-type]
    gateway.announce()
    user_key = gateway.spawn("atlas", "direct", "mine")
    for _ in range(400):
        gateway.step()
        assert sum(s.by_gateway for s in gateway.sessions.values()) <= 6
    assert {type(e).type for e in recorder.events} == {
        "session.created",
        "session.killed",
        "agent.status",
        "cron.executed",
        "gateway.status",
    }
    assert user_key in gateway.sessions, "the gateway never kills a user's session"
    last = {e.agent_id: e for e in recorder.events if type(e).type == "agent.status"}
    for agent_id in AGENTS:
        expected = sum(1 for s in gateway.sessions.values() if s.agent_id == agent_id)
        assert last[agent_id].active_session_count == expected
    with pytest.raises(ValueError, match="unknown agent"):
        gateway.spawn("nobody")
    with pytest.raises(ValueError, match="unknown kind"):
        gateway.spawn("atlas", "batch")  # type: ignore[arg-type]
    assert gateway.kill("no-such-session") is False


def test_credentials_come_from_the_environment_or_are_generated() -> None:
    """DASHBOARD_USERNAME / DASHBOARD_PASSWORD when set; admin and a fresh password otherwise."""
    env = {"DASHBOARD_USERNAME": "ops", "DASHBOARD_PASSWORD": "s3cret"}
    assert credentials(env) == ("ops", "s3cret", False)
    user, password, generated = credentials({})
    assert (user, generated) == ("admin", True)
    assert len(password) >= 16
    assert credentials({})[1] != password


def test_serve_prints_the_url_and_credentials_then_runs_uvicorn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """serve() tells the user where to go and how to log in, then hands the app to uvicorn."""
    import uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.delenv("DASHBOARD_PASSWORD", raising=False)
    monkeypatch.setenv("DASHBOARD_USERNAME", "ops")
    out = io.StringIO()
    livepanel.demo.serve("127.0.0.1", 8123, "memory://", out=out)
    text = out.getvalue()
    assert "http://127.0.0.1:8123/" in text
    assert "username: ops" in text
    assert "(generated; set DASHBOARD_PASSWORD" in text
    assert "backend:  memory://" in text
    ((app, options),) = calls
    assert isinstance(app, DemoApp)
    assert isinstance(app.broadcaster, Broadcaster)
    assert (options["host"], options["port"], options["lifespan"]) == ("127.0.0.1", 8123, "on")


def test_python_m_livepanel_demo_parses_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """python -m livepanel.demo --host --port --backend-url --interval reach serve()."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        livepanel.demo,
        "serve",
        lambda **kw: calls.append((kw["host"], kw["port"], kw["backend_url"], kw["interval"])),
    )
    assert (
        livepanel.demo.__main__.main(
            ["--port", "9001", "--backend-url", "redis://x", "--interval", "0"]
        )
        == 0
    )
    assert livepanel.demo.__main__.main([]) == 0
    assert calls == [("127.0.0.1", 9001, "redis://x", 0.0), ("127.0.0.1", 8000, None, 1.5)]


def test_python_m_livepanel_demo_takes_the_flags_of_livepanel_demo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One parser: the help of python -m livepanel.demo is the help of livepanel demo."""
    from livepanel.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["demo", "--help"])
    expected = capsys.readouterr().out
    with pytest.raises(SystemExit):
        livepanel.demo.__main__.main(["--help"])
    assert capsys.readouterr().out == expected
    for flag in ("--host", "--port", "--backend-url", "--redis", "--interval"):
        assert flag in expected
