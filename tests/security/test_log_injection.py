"""Log injection: what a client controls never reaches a log line raw. The endpoint is driven
directly through ASGI, so the scope can hold what a lax proxy or server might pass on."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from livepanel import BasicAuth, Broadcaster, LivePanelApp
from tests.integration.helpers import basic

HOSTILE = "203.0.113.9\r\nINFO livepanel: accepted admin\x1b[2J"


def scope(client: tuple[str, int], authorization: str, query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"panel.test"), (b"authorization", authorization.encode())],
        "client": client,
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
    }


async def converse(app: LivePanelApp, scope: dict[str, Any], frames: list[str]) -> list[Any]:
    """Connect, send ``frames``, then disconnect; return what the app sent."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[Any] = []
    accepted = asyncio.Event()
    answers = asyncio.Event()
    await inbox.put({"type": "websocket.connect"})

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.accept":
            accepted.set()
        if message["type"] == "websocket.send" and '"error"' in message.get("text", ""):
            answers.set()

    task = asyncio.ensure_future(app(scope, receive, send))  # type: ignore[arg-type]
    waiter = asyncio.ensure_future(accepted.wait())
    await asyncio.wait({task, waiter}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if accepted.is_set():
        for frame in frames:
            await inbox.put({"type": "websocket.receive", "text": frame})
        if frames:
            await asyncio.wait_for(answers.wait(), 5)
        await inbox.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 5)
    return sent


def assert_clean(records: list[logging.LogRecord]) -> None:
    for record in records:
        line = record.getMessage()
        assert line.isprintable(), f"a log line with control characters: {line!r}"


def livepanel_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "livepanel"]


def test_a_hostile_client_address_is_logged_escaped(caplog: pytest.LogCaptureFixture) -> None:
    """A refusal names the client; control characters in its address come out escaped."""
    caplog.set_level(logging.DEBUG, logger="livepanel")
    app = LivePanelApp(Broadcaster(), auth=BasicAuth(lambda u, p: False), auth_failure_limit=2)
    for _ in range(3):  # two refusals (one line per address), the lockout warning, then a 429
        asyncio.run(converse(app, scope((HOSTILE, 1), basic("admin", "guess")), []))
    records = livepanel_records(caplog)
    assert len(records) == 2
    assert all("203.0.113.9\\r\\n" in r.getMessage() for r in records)
    assert_clean(records)


def test_usernames_message_types_and_payloads_are_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A username, a message type or a ping payload with a forged log line reaches no log."""
    caplog.set_level(logging.DEBUG, logger="livepanel")
    forged = "x\nINFO livepanel: accepted admin"
    app = LivePanelApp(Broadcaster(), auth=BasicAuth(lambda u, p: True))
    frames = [
        json.dumps({"type": forged}),
        json.dumps({"type": "subscribe", "payload": {"types": [forged]}}),
        json.dumps({"type": "ack", "payload": {"id": forged}}),
    ]
    sent = asyncio.run(converse(app, scope(("192.0.2.1", 2), basic(forged, "pw")), frames))
    assert sent[0]["type"] == "websocket.accept"
    errors = [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send"][1:]
    assert [e["payload"]["code"] for e in errors] == [
        "unknown_type",
        "invalid_message",
        "invalid_message",
    ]
    records = livepanel_records(caplog)
    assert_clean(records)
    assert all("admin" not in r.getMessage() for r in records)
