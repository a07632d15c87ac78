"""The demo on Redis: a page that was away gets every event it missed, in order, once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import ROOT, DemoServer, expect, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.redis]


def publish_while_away(url: str, count: int) -> list[str]:
    """Publish ``count`` cron runs from a second process; return their ids in order."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.browser.publisher", url, str(count)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_page_gets_every_event_published_while_the_server_was_down_in_order_once(
    redis_url: str, start_demo: Callable[..., DemoServer], open_dashboard: Any
) -> None:
    """Kill the demo, publish from another process, restart: the page resumes with since."""
    demo = start_demo(backend_url=redis_url, interval=0)
    page = open_dashboard(demo)
    page.fill("#spawn-label", "before the outage")
    page.click("#spawn")
    expect(page.locator("#sessions tbody tr:has-text('before the outage')")).to_have_count(1)

    demo.kill()
    wait_until(page, "() => window.livepanelDemo.client.status === 'reconnecting'", timeout=5)
    missed = publish_while_away(redis_url, 12)
    demo.start()

    wait_until(
        page,
        "(ids) => ids.every((id) => window.livepanelDemo.feedIds().includes(id))",
        missed,
        timeout=30,
    )
    feed = page.evaluate("window.livepanelDemo.feedIds()")[::-1]  # oldest first
    assert len(feed) == len(set(feed)), "an event was shown twice"
    positions = [feed.index(event_id) for event_id in missed]
    assert positions == sorted(positions), "the missed events arrived out of order"
    assert page.evaluate("window.livepanelDemo.counters.states") == 1  # resumed: no new state
    cron = page.locator("#cron tbody tr")
    expect(cron.first).to_have_attribute("data-id", missed[-1])
    rows = [cron.nth(i).get_attribute("data-id") for i in range(len(missed))]
    assert rows == missed[::-1]
    # the session from before the outage is still there: the page never had to refetch
    expect(page.locator("#sessions tbody tr:has-text('before the outage')")).to_have_count(1)
