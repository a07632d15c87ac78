"""Attacks on the event registry: a type name taken twice must fail loudly, never switch
payload classes under the application's feet."""

from __future__ import annotations

from tests.unit.test_builtin_types import BUILTIN, run_fresh


def test_attack_the_builtin_types_never_override_an_apps_own_session_created() -> None:
    """An app declares ``session.created`` with its own payload; importing the built-in types
    later fails with an error naming the type and the app's class, registers none of the
    five, and the app's type keeps validating its own payload."""
    seen = run_fresh(
        """
        import json
        from livepanel import Broadcaster, event_type
        from livepanel.events import prepare_payload, registered_types

        @event_type("session.created")
        class TenantSession:
            tenant: str
            seats: int

        try:
            from livepanel.events import SessionCreated
        except ValueError as exc:
            error = str(exc)
        else:
            error = None
        try:
            from livepanel.events import SessionKilled  # a second try: still refused
        except ValueError:
            again = True
        else:
            again = False
        print(json.dumps({
            "error": error,
            "again": again,
            "types": sorted(registered_types()),
            "class": registered_types()["session.created"].__qualname__,
            "payload": prepare_payload("session.created", {"tenant": "t1", "seats": 3}),
        }))
        """
    )
    assert seen["error"] is not None
    assert "'session.created' is already registered to __main__.TenantSession" in seen["error"]
    assert "built-in types" in seen["error"]
    assert seen["again"] is True
    assert seen["types"] == ["session.created"]
    assert not set(seen["types"]) & (set(BUILTIN) - {"session.created"})
    assert seen["class"] == "TenantSession"
    assert seen["payload"] == {"tenant": "t1", "seats": 3}


def test_attack_an_app_type_declared_after_the_builtin_ones_is_refused() -> None:
    """With the built-in types imported, an application's ``session.created`` of another shape
    is refused with the name of the class that holds it; the built-in one stays."""
    seen = run_fresh(
        """
        import json
        from livepanel import event_type
        from livepanel.events import SessionCreated, registered_types

        try:
            @event_type("session.created")
            class TenantSession:
                tenant: str
        except ValueError as exc:
            error = str(exc)
        else:
            error = None
        print(json.dumps({"error": error,
                          "holder": registered_types()["session.created"].__module__}))
        """
    )
    assert seen["error"] is not None
    assert (
        "already registered to SessionCreated (livepanel.events.builtin.SessionCreated)"
        in (seen["error"])
    )
    assert "__main__.TenantSession" in seen["error"]
    assert seen["holder"] == "livepanel.events.builtin"
