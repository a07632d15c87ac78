"""The demo dashboard in a real Chromium: live across tabs, through restarts, refused logins."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.browser.conftest import USER, DemoServer, expect, wait_until

pytestmark = pytest.mark.browser

GREEN, AMBER, RED = "rgb(18, 183, 106)", "rgb(247, 144, 9)", "rgb(240, 68, 56)"

# the page's state and what its tables show, read in one go after the pending render
READ_PAGE = """async () => {
  await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
  const rows = (selector, attr) =>
    [...document.querySelectorAll(selector)].map((row) => row.getAttribute(attr));
  return {
    state: window.livepanelDemo.state(),
    sessions: rows("#sessions tbody tr", "data-key"),
    agents: Object.fromEntries([...document.querySelectorAll("#agents tbody tr")].map(
      (row) => [row.dataset.agent, row.querySelector(".badge").textContent])),
    cron: rows("#cron tbody tr", "data-id"),
    gateway: document.getElementById("gateway-status").textContent,
  };
}"""


def indicator(page: Any) -> tuple[str, str, str]:
    """The connection indicator: (data-status, text, dot colour)."""
    status, text, colour = page.evaluate(
        """() => {
          const box = document.getElementById("connection");
          return [box.dataset.status, box.innerText.trim(),
                  getComputedStyle(box.querySelector(".dot")).backgroundColor];
        }"""
    )
    return status, text, colour


def wait_for_status(page: Any, status: str, timeout: float = 20.0) -> None:
    wait_until(page, "(status) => window.livepanelDemo.client.status === status", status, timeout)


def post(server: DemoServer, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.post(
        f"{server.url}{path}", json=body or {}, auth=server.auth, headers={"Origin": server.url}
    )
    response.raise_for_status()
    return response.json()


def assert_page_matches_server(page: Any, server: DemoServer, timeout: float = 15.0) -> None:
    """Wait until the page shows exactly the server's state, then compare everything."""
    deadline = time.monotonic() + timeout
    while True:
        truth = server.state()
        entries = {name: c["entries"] for name, c in truth["collections"].items()}
        expected = {
            "lastEventId": truth["lastEventId"],
            "collections": {name: [e["id"] for e in found] for name, found in entries.items()},
        }
        seen = page.evaluate(READ_PAGE)
        if seen["state"] == expected and len(seen["sessions"]) == len(entries["sessions"]):
            break
        assert time.monotonic() < deadline, f"page {seen} never caught up with {expected}"
        page.wait_for_timeout(50)
    newest_first = sorted(entries["sessions"], key=lambda e: e["timestamp"], reverse=True)
    assert seen["sessions"] == [e["payload"]["sessionKey"] for e in newest_first]
    assert seen["agents"] == {
        e["payload"]["agentId"]: e["payload"]["status"] for e in entries["agents"]
    }
    assert seen["cron"] == [e["id"] for e in entries["cronRuns"]][::-1]
    assert seen["gateway"] == entries["gateway"][-1]["payload"]["status"]


def test_two_tabs_show_a_session_spawned_in_one_and_killed_in_the_other(
    demo: DemoServer, open_dashboard: Any
) -> None:
    """Spawn from tab one: both tabs list it. Kill it from tab two: both tabs drop it."""
    first, second = open_dashboard(demo), open_dashboard(demo)
    label = f"two tabs {secrets.token_hex(3)}"
    first.select_option("#spawn-agent", "orion")
    first.fill("#spawn-label", label)
    first.click("#spawn")
    row = f"#sessions tbody tr:has-text('{label}')"
    for page in (first, second):
        expect(page.locator(row)).to_have_count(1)
        expect(page.locator(row)).to_contain_text("orion")
    key = second.locator(row).get_attribute("data-key")
    second.locator(row).get_by_role("button", name="Kill").click()
    for page in (first, second):
        expect(page.locator(f'#sessions tbody tr[data-key="{key}"]')).to_have_count(0)
    assert first.page_errors == second.page_errors == []


def test_the_indicator_text_and_colour_follow_the_status(
    demo: DemoServer, open_dashboard: Any
) -> None:
    """Live and green; Reconnecting and amber while the server is away; Live again after."""
    page = open_dashboard(demo)
    assert indicator(page) == ("open", "Live", GREEN)
    demo.kill()
    wait_for_status(page, "reconnecting", timeout=5)
    status, text, colour = indicator(page)
    assert (status, colour) == ("reconnecting", AMBER)
    assert text.startswith("Reconnecting")
    demo.start()
    # the new server cannot resume the page: it sends the new state, and the page is Live again
    wait_until(page, "() => window.livepanelDemo.counters.states >= 2", timeout=20)
    wait_for_status(page, "open")
    assert indicator(page) == ("open", "Live", GREEN)


def test_after_a_restart_the_page_gets_the_new_state_and_ends_identical_to_the_server(
    demo: DemoServer, open_dashboard: Any
) -> None:
    """Memory backend: the restarted server cannot resume the page: it sends the new state."""
    page = open_dashboard(demo)
    gone = post(demo, "/api/sessions/spawn", {"agentId": "vega", "label": "before the crash"})
    expect(page.locator(f'#sessions tbody tr[data-key="{gone["sessionKey"]}"]')).to_have_count(1)
    assert_page_matches_server(page, demo)

    demo.kill()
    demo.start()
    wait_until(page, "() => window.livepanelDemo.counters.states >= 2", timeout=20)
    wait_for_status(page, "open")
    expect(page.locator(f'#sessions tbody tr[data-key="{gone["sessionKey"]}"]')).to_have_count(0)
    kept = post(demo, "/api/sessions/spawn", {"agentId": "atlas", "label": "after the crash"})
    expect(page.locator(f'#sessions tbody tr[data-key="{kept["sessionKey"]}"]')).to_have_count(1)
    assert_page_matches_server(page, demo)
    assert page.page_errors == []


def test_wrong_credentials_end_in_auth_failed_without_a_retry_storm(
    demo: DemoServer, open_dashboard: Any
) -> None:
    """The server returns with a new password: one refused handshake, auth_failed, then quiet."""
    page = open_dashboard(demo)
    demo.kill()
    demo.start(password="a brand new password")
    wait_for_status(page, "auth_failed")
    assert indicator(page) == ("auth_failed", "Authentication failed", RED)
    expect(page.locator("#reconnect")).to_be_visible()
    first = demo.get("/api/stats")
    assert 1 <= first["handshakes"] <= 2, first
    page.wait_for_timeout(3_000)  # longer than the next backoff delays: nothing may happen
    later = demo.get("/api/stats")
    assert (later["handshakes"], later["probes"]) == (first["handshakes"], first["probes"])
    assert later["connections"] == 0
    assert page.evaluate("window.livepanelDemo.client.status") == "auth_failed"


def test_the_top_bar_shows_who_is_watching(demo: DemoServer, open_dashboard: Any) -> None:
    """presence.changed: a second tab makes both say "2 watching"; closing it, "1 watching"."""
    first = open_dashboard(demo)
    expect(first.locator("#watching")).to_have_text("1 watching")
    second = open_dashboard(demo)
    for page in (first, second):
        expect(page.locator("#watching")).to_have_text("2 watching")
        expect(page.locator("#watching")).to_have_attribute("title", f"{USER} (2 tabs)")
    second.context.close()
    expect(first.locator("#watching")).to_have_text("1 watching")
    expect(first.locator("#watching")).to_have_attribute("title", USER)
    assert first.page_errors == []


def test_a_page_opened_mid_stream_shows_exactly_the_servers_state(
    demo: DemoServer, open_dashboard: Any
) -> None:
    """Sessions spawned before the page opens are in its first state; later ones follow."""
    before = [post(demo, "/api/sessions/spawn", {"agentId": "vega"}) for _ in range(3)]
    post(demo, f"/api/sessions/{before[0]['sessionKey']}/kill")
    page = open_dashboard(demo)
    assert_page_matches_server(page, demo)
    assert page.evaluate("window.livepanelDemo.counters.states") == 1
    post(demo, "/api/sessions/spawn", {"agentId": "orion"})
    assert_page_matches_server(page, demo)
    assert page.page_errors == []


def test_a_page_opened_with_credentials_in_its_url_works_or_says_why(
    demo: DemoServer, browser: Any
) -> None:
    """http://user:pass@host/: the page goes Live, or shows an error; never stays Connecting."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        user, password = quote(USER, safe=""), quote(demo.password, safe="")
        page.goto(f"http://{user}:{password}@127.0.0.1:{demo.port}/")
        outcome = wait_until(
            page,
            """() => {
              const notice = document.getElementById("notice");
              if (window.livepanelDemo?.client?.status === "open") return "open";
              if (notice && !notice.hidden && notice.textContent.trim()) return notice.textContent;
              return null;
            }""",
            timeout=20,
        )
        if outcome == "open":
            assert_page_matches_server(page, demo)
        else:
            assert "server" in outcome or "credentials" in outcome, outcome
    finally:
        context.close()


# whether the page shows itself stale: the tables' opacity, the gateway line, who watches
READ_STALENESS = """() => ({
  stale: document.body.dataset.stale === "true",
  opacity: Number(getComputedStyle(document.querySelector("#sessions-card .table-wrap")).opacity),
  gateway: document.getElementById("gateway-detail").textContent,
  watching: document.getElementById("watching").hidden
    ? null : document.getElementById("watching").textContent,
})"""

HEARTBEAT = 1.0


def test_a_hung_server_dims_the_tables_freezes_the_uptime_and_clears_watching(
    start_demo: Any, open_dashboard: Any
) -> None:
    """SIGSTOP (sockets open, nothing sent): within two heartbeats the tables are dimmed, the
    gateway's uptime stops counting and "watching" is gone; SIGCONT brings it all back."""
    demo = start_demo(heartbeat=HEARTBEAT, interval=0.5)
    page = open_dashboard(demo)
    expect(page.locator("#watching")).to_have_text("1 watching")
    wait_until(page, "() => document.getElementById('gateway-detail').textContent.includes('up')")
    live = page.evaluate(READ_STALENESS)
    assert (live["stale"], live["opacity"]) == (False, 1.0)
    demo.pause()
    paused_at = time.monotonic()
    try:
        wait_until(page, "() => document.body.dataset.stale === 'true'", timeout=2 * HEARTBEAT + 3)
        noticed_after = time.monotonic() - paused_at
        # the watchdog's two heartbeats, plus the browser's and this test's polling
        assert noticed_after <= 2 * HEARTBEAT + 1.0, noticed_after
        stale = page.evaluate(READ_STALENESS)
        assert stale["opacity"] < 0.5
        assert stale["watching"] is None
        assert " · as of " in stale["gateway"]
        page.wait_for_timeout(2_500)  # the page's clock ticks every second: the uptime must not
        assert page.evaluate(READ_STALENESS)["gateway"] == stale["gateway"]
    finally:
        demo.resume()
    wait_for_status(page, "open")
    expect(page.locator("#watching")).to_have_text("1 watching")
    back = page.evaluate(READ_STALENESS)
    assert (back["stale"], back["opacity"]) == (False, 1.0)
    assert " · as of " not in back["gateway"]
    assert page.page_errors == []


def test_a_killed_server_dims_the_page_at_once(start_demo: Any, open_dashboard: Any) -> None:
    """SIGKILL closes the sockets: the page is dimmed, with nobody watching, within a heartbeat."""
    demo = start_demo(heartbeat=HEARTBEAT)
    page = open_dashboard(demo)
    expect(page.locator("#watching")).to_have_text("1 watching")
    demo.kill()
    wait_until(page, "() => document.body.dataset.stale === 'true'", timeout=HEARTBEAT)
    stale = page.evaluate(READ_STALENESS)
    assert stale["opacity"] < 0.5
    assert stale["watching"] is None
