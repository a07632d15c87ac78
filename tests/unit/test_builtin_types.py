"""The built-in event types are opt-in (SPEC section 11), checked in fresh interpreters.

The test suite itself imports ``livepanel.events.builtin`` (tests/conftest.py),
so what a bare ``import livepanel`` registers can only be seen in a process of
its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = ["agent.status", "cron.executed", "gateway.status", "session.created", "session.killed"]
BUILTIN_COLLECTIONS = ["agents", "cronRuns", "gateway", "sessions"]


def run_fresh(code: str) -> Any:
    """Run ``code`` in a new interpreter with this tree's livepanel; return what it printed
    as JSON."""
    path = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_importing_livepanel_registers_no_builtin_type() -> None:
    """``import livepanel`` and ``import livepanel.events`` register none of the five, import
    neither the built-in module nor the demo, and the state has no collections."""
    seen = run_fresh(
        """
        import asyncio, json, sys
        import livepanel, livepanel.events
        from livepanel.events import registered_types, state_rules
        from livepanel.protocol import TypeFilter
        from livepanel.state import StateFold, state_frame

        async def state():
            broadcaster = livepanel.Broadcaster()
            try:
                return await broadcaster.state()
            finally:
                await broadcaster.close()

        frame = json.loads(state_frame(StateFold("e1").snapshot(), TypeFilter(["*"])))
        print(json.dumps({
            "types": sorted(registered_types()),
            "rules": sorted(state_rules()),
            "collections": asyncio.run(state())["collections"],
            "frame": frame["payload"]["collections"],
            "modules": sorted(m for m in ("livepanel.events.builtin", "livepanel.demo")
                              if m in sys.modules),
        }))
        """
    )
    assert seen == {"types": [], "rules": [], "collections": {}, "frame": {}, "modules": []}


def test_importing_one_builtin_type_registers_all_five() -> None:
    """``from livepanel.events import SessionCreated`` registers the five, with their state
    collections."""
    seen = run_fresh(
        """
        import asyncio, json
        from livepanel import Broadcaster
        from livepanel.events import SessionCreated, registered_types

        async def state():
            broadcaster = Broadcaster()
            try:
                await broadcaster.apublish(SessionCreated("s1", "a1", "direct"))
                return await broadcaster.state()
            finally:
                await broadcaster.close()

        collections = asyncio.run(state())["collections"]
        print(json.dumps({
            "types": sorted(registered_types()),
            "module": SessionCreated.__module__,
            "collections": sorted(collections),
            "sessions": [e["payload"]["sessionKey"] for e in collections["sessions"]["entries"]],
        }))
        """
    )
    assert seen == {
        "types": BUILTIN,
        "module": "livepanel.events.builtin",
        "collections": BUILTIN_COLLECTIONS,
        "sessions": ["s1"],
    }


def test_every_builtin_name_is_importable_from_livepanel_events() -> None:
    """Each of the five names imports from ``livepanel.events`` as the README shows."""
    seen = run_fresh(
        """
        import json
        import livepanel.events
        from livepanel.events import AgentStatus, CronExecuted, GatewayStatus, SessionKilled
        from livepanel.events.builtin import SessionCreated

        names = ["AgentStatus", "CronExecuted", "GatewayStatus", "SessionCreated", "SessionKilled"]
        print(json.dumps({
            "same": [getattr(livepanel.events, n) is getattr(livepanel.events.builtin, n)
                     for n in names],
            "listed": [n in dir(livepanel.events) for n in names],
            "types": [SessionCreated.type, SessionKilled.type, AgentStatus.type,
                      CronExecuted.type, GatewayStatus.type],
        }))
        """
    )
    assert seen["same"] == [True] * 5
    assert seen["listed"] == [True] * 5
    assert sorted(seen["types"]) == BUILTIN


def test_an_app_may_declare_its_own_session_created() -> None:
    """Without the built-in types, ``session.created`` is the application's to declare, and
    its state holds only the application's collections."""
    seen = run_fresh(
        """
        import asyncio, json
        from livepanel import Broadcaster, event_type

        @event_type("session.created", collection="logins", key="user")
        class LoggedIn:
            user: str
            ip: str

        async def run():
            broadcaster = Broadcaster()
            try:
                event = await broadcaster.apublish("session.created", {"user": "ada", "ip": "::1"})
                return event.payload, await broadcaster.state()
            finally:
                await broadcaster.close()

        payload, state = asyncio.run(run())
        print(json.dumps({"payload": payload, "collections": sorted(state["collections"]),
                          "types": sorted(state["types"])}))
        """
    )
    assert seen == {
        "payload": {"user": "ada", "ip": "::1"},
        "collections": ["logins"],
        "types": ["session.created"],
    }
