"""livepanel.js in Chromium acks an event only after its handlers ran: receipts prove it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from livepanel import Broadcaster, Receipt
from livepanel.events import SessionCreated
from tests.browser.conftest import wait_until
from tests.browser.test_transports import site
from tests.servers import run_server

HANDLERS = """async ({ throws }) => {
  const { connect } = await import("/livepanel.js");
  window.seen = [];
  window.client = connect("/ws", { transport: "websocket" });
  window.client.on("session.created", (event) => {
    window.seen.push(event.id);
    if (throws) throw new Error("this dashboard's handler is broken");
  });
}"""


def receipt_of(broadcaster: Broadcaster, event_id: str) -> Receipt:
    """Ask from another thread: Playwright's sync API marks this thread's loop as running."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, broadcaster.receipts(event_id)).result(timeout=10)


@pytest.fixture
def served() -> Iterator[tuple[str, Broadcaster]]:
    broadcaster = Broadcaster()
    with run_server(site(broadcaster), "uvicorn-websockets") as server:
        yield f"http://127.0.0.1:{server.port}/", broadcaster


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[str], Any]]:
    context = browser.new_context()

    def open_page(url: str) -> Any:
        page = context.new_page()
        page.goto(url)
        return page

    try:
        yield open_page
    finally:
        context.close()


def test_a_page_acks_after_its_handler_ran_and_a_throwing_handler_does_not_ack(
    served: tuple[str, Broadcaster], new_page: Callable[[str], Any]
) -> None:
    """Two pages get the same event; the one whose handler throws is never counted."""
    url, broadcaster = served
    good, broken = new_page(url), new_page(url)
    errors: list[str] = []
    broken.on("pageerror", lambda error: errors.append(str(error)))
    good.evaluate(HANDLERS, {"throws": False})
    broken.evaluate(HANDLERS, {"throws": True})
    for page in (good, broken):
        wait_until(page, "() => window.client.status === 'open'")
    event = broadcaster.publish(SessionCreated(session_key="s1", agent_id="a1", kind="direct"))
    assert event.id is not None
    for page in (good, broken):
        wait_until(page, "(id) => window.seen.includes(id)", event.id)
    wait_until(good, "(id) => window.client.ackedId === id", event.id)
    deadline = time.monotonic() + 5
    while receipt_of(broadcaster, event.id).connections < 1:
        assert time.monotonic() < deadline, "the good page's ack never reached the server"
        good.wait_for_timeout(50)
    broken.wait_for_timeout(750)  # three ack intervals: an ack would have been sent by now
    assert receipt_of(broadcaster, event.id).connections == 1
    assert broken.evaluate("() => window.client.ackedId") is None
    assert any("handler is broken" in e for e in errors)  # still reported, as before
