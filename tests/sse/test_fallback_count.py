"""The server counts event streams that came as a fallback from WebSocket (``?fallback=1``,
``livepanel_sse_fallbacks_total``), read with httpx from a real server: only streams it
accepted, so a client that is refused cannot move the count."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest

from livepanel import Broadcaster, LivePanelApp
from livepanel.metrics import instrument
from tests.integration.helpers import AUTH, TIMEOUT, admin_only, basic
from tests.servers import run_server
from tests.sse.test_sse import STREAM, Messages


def open_stream(url: str, headers: dict[str, str]) -> int:
    """Open an event stream, read its first message when accepted; the HTTP status."""
    with httpx.Client(timeout=httpx.Timeout(TIMEOUT), trust_env=False) as client:
        with client.stream("GET", url, headers={**STREAM, **headers}) as response:
            if response.status_code == 200:
                assert Messages(response).next()["event"] == "welcome"
            return response.status_code


def test_accepted_fallback_streams_are_counted_refused_and_plain_ones_are_not() -> None:
    """Two accepted ?fallback=1 streams count 2; a plain stream, a WebSocket-less probe and
    a ?fallback=1 stream with wrong credentials count nothing."""
    endpoint = LivePanelApp(Broadcaster(), auth=admin_only())
    registry = CollectorRegistry()
    instrument(endpoint.broadcaster, endpoint, registry=registry)
    with run_server(endpoint, "uvicorn-websockets-sansio") as server:
        base = f"{server.http_url}/"
        assert open_stream(f"{base}?fallback=1", AUTH) == 200
        assert open_stream(f"{base}?batch=0&fallback=1&types=session.*", AUTH) == 200
        assert open_stream(base, AUTH) == 200  # chosen, not a fallback
        assert open_stream(f"{base}?fallback=yes", AUTH) == 200  # only 1 means it
        wrong = {"Authorization": basic("admin", "guess")}
        for _ in range(3):  # the adversary: inflating the count without credentials
            assert open_stream(f"{base}?fallback=1", wrong) == 401
        with httpx.Client(timeout=httpx.Timeout(TIMEOUT), trust_env=False) as client:
            assert client.get(f"{base}?fallback=1", headers=AUTH).status_code == 426
    assert endpoint.sse_fallbacks == 2
    page = generate_latest(registry).decode()
    assert "livepanel_sse_fallbacks_total 2.0" in page
