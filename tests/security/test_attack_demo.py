"""The demo, attacked as it runs: guessing the password through its page and REST routes
instead of the WebSocket endpoint, and reading a Redis password from what it prints."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import livepanel.demo
from livepanel.demo import DemoApp
from tests.servers import RunningServer, run_server

USER, PASSWORD = "admin", "pa:ss"


@pytest.fixture
def demo() -> Iterator[RunningServer]:
    app = DemoApp(username=USER, password=PASSWORD, interval=0)
    with run_server(app, "uvicorn-wsproto", lifespan=True) as server:
        yield server


def test_attack_guessing_through_the_page_and_the_api_is_throttled(demo: RunningServer) -> None:
    """Wrong passwords through /, /api/snapshot and the REST routes count against one budget
    per address with the WebSocket endpoint's: after 20, everything answers 429, the right
    password included; requests without credentials (a first page load) never count."""
    url = demo.http_url
    assert {httpx.get(f"{url}/").status_code for _ in range(30)} == {401}  # no credentials
    statuses = []
    for n in range(24):
        path = ("/", "/api/snapshot", "/api/stats", "/static/dashboard.js")[n % 4]
        statuses.append(httpx.get(f"{url}{path}", auth=(USER, f"guess-{n}")).status_code)
    assert statuses == [401] * 20 + [429] * 4
    refused = httpx.post(f"{url}/api/sessions/spawn", auth=(USER, PASSWORD), json={})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert httpx.get(f"{url}/ws", auth=(USER, PASSWORD)).status_code == 429


def test_attack_the_demo_never_prints_the_redis_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Redis URL with a password is printed with the password masked."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    out = io.StringIO()
    livepanel.demo.serve("127.0.0.1", 8123, "redis://:hunter2@127.0.0.1:6379/0", out=out)
    text = out.getvalue()
    assert "hunter2" not in text
    assert "backend:  redis://:***@127.0.0.1:6379/0" in text


def test_attack_a_few_wrong_guesses_do_not_lock_the_page(demo: RunningServer) -> None:
    """Fewer wrong guesses than the limit leave the right password working."""
    statuses: list[Any] = [
        httpx.get(f"{demo.http_url}/", auth=(USER, "wrong")).status_code for _ in range(3)
    ]
    assert statuses == [401] * 3
    assert httpx.get(f"{demo.http_url}/", auth=(USER, PASSWORD)).status_code == 200
