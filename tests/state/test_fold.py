"""The state fold, the collections declared on event_type, and the state frame: sans-I/O."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from livepanel import Event, event_type
from livepanel.events import _REGISTRY, _STATE_RULES, StateRule, state_rules
from livepanel.protocol import ClientProtocol, Subscribe, TypeFilter, parse_connect_query
from livepanel.state import (
    StateFold,
    conflation_key,
    entry_key,
    state_frame,
    state_payload,
)


@pytest.fixture
def registry():
    """Types registered by a test are forgotten after it."""
    types, rules = dict(_REGISTRY), dict(_STATE_RULES)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(types)
    _STATE_RULES.clear()
    _STATE_RULES.update(rules)


def created(key: str, n: int, epoch: str = "e1") -> Event:
    payload = {"sessionKey": key, "agentId": "a1", "kind": "direct"}
    return Event("session.created", payload, id=f"{epoch}:{n}")


def killed(key: str, n: int, epoch: str = "e1") -> Event:
    return Event("session.killed", {"sessionKey": key, "agentId": "a1"}, id=f"{epoch}:{n}")


def cron(n: int, epoch: str = "e1") -> Event:
    payload = {"jobId": f"j{n}", "command": "c", "exitCode": 0, "durationMs": 1}
    return Event("cron.executed", payload, id=f"{epoch}:{n}")


def gateway(n: int, epoch: str = "e1") -> Event:
    payload = {"status": "running", "version": "1", "uptime": float(n)}
    return Event("gateway.status", payload, id=f"{epoch}:{n}")


def ids(fold: StateFold, collection: str) -> list[str | None]:
    return [e.id for e in fold.snapshot().collections[collection]]


def test_builtin_collections_are_declared():
    """The built-in types fill sessions, agents, cronRuns and gateway as SPEC section 7 says."""
    rules = state_rules()
    assert rules["session.created"] == StateRule("sessions", "sessionKey")
    assert rules["session.killed"] == StateRule("sessions", "sessionKey", removes=True)
    assert rules["agent.status"] == StateRule("agents", "agentId")
    assert rules["cron.executed"] == StateRule("cronRuns", None, keep=20)
    assert rules["gateway.status"] == StateRule("gateway", None, keep=1)


def test_an_entry_is_the_newest_event_for_its_key():
    """A second event for a key replaces the first and moves to the end."""
    fold = StateFold("e1")
    fold.apply_all([created("s1", 1), created("s2", 2), created("s1", 3)])
    assert ids(fold, "sessions") == ["e1:2", "e1:3"]
    assert fold.last_event_id == "e1:3"


def test_removes_deletes_the_entry_with_the_events_key():
    """session.killed removes its session; killing an unknown key changes nothing."""
    fold = StateFold("e1")
    fold.apply_all([created("s1", 1), created("s2", 2), killed("s1", 3), killed("zz", 4)])
    assert ids(fold, "sessions") == ["e1:2"]
    assert fold.last_event_id == "e1:4"


def test_a_keyless_collection_keeps_its_newest_events():
    """cronRuns keeps the newest 20; gateway (keep=1) is a singleton."""
    fold = StateFold("e1")
    fold.apply_all([cron(n) for n in range(1, 31)])
    fold.apply_all([gateway(31), gateway(32)])
    assert ids(fold, "cronRuns") == [f"e1:{n}" for n in range(11, 31)]
    assert ids(fold, "gateway") == ["e1:32"]


def test_an_event_of_another_epoch_starts_the_state_over():
    """A new epoch starts with an empty state."""
    fold = StateFold("e1")
    fold.apply_all([created("s1", 1), gateway(2)])
    fold.apply(created("s9", 1, epoch="e2"))
    assert ids(fold, "sessions") == ["e2:1"]
    assert ids(fold, "gateway") == []
    assert fold.epoch == "e2"


def test_a_keyed_collection_evicts_the_entry_updated_longest_ago(caplog):
    """Beyond the limit the entry updated longest ago goes, counted, logged once."""
    fold = StateFold("e1", limit=3)
    with caplog.at_level(logging.WARNING, logger="livepanel"):
        fold.apply_all([created(f"s{n}", n) for n in range(1, 4)])
        fold.apply(created("s1", 4))  # s1 is now the newest
        fold.apply_all([created("s5", 5), created("s6", 6)])
    assert fold.keys("sessions") == ["s1", "s5", "s6"]
    assert fold.evicted == 2
    assert len([r for r in caplog.records if "evicting" in r.getMessage()]) == 1


def test_the_snapshot_lists_every_declared_collection_even_empty():
    """A client learns every collection it may see, with its key and keep."""
    payload = state_payload(StateFold("e1").snapshot())
    assert payload["lastEventId"] == "e1:0"
    assert payload["collections"]["sessions"] == {"key": "sessionKey", "keep": None, "entries": []}
    assert payload["collections"]["cronRuns"] == {"key": None, "keep": 20, "entries": []}
    assert payload["types"]["session.killed"] == {"collection": "sessions", "removes": True}


def test_the_state_frame_holds_only_collections_whose_types_pass_the_filter():
    """A connection subscribed to session.* gets sessions, nothing else."""
    fold = StateFold("e1")
    fold.apply_all([created("s1", 1), gateway(2)])
    frame = json.loads(state_frame(fold.snapshot(), TypeFilter(["session.*"])))
    assert frame["type"] == "state"
    assert list(frame["payload"]["collections"]) == ["sessions"]
    assert set(frame["payload"]["types"]) == {"session.created", "session.killed"}
    assert frame["payload"]["lastEventId"] == "e1:2"


def test_the_state_frame_carries_whole_events_as_on_the_wire():
    """Each entry is the event object a live frame carries, id included."""
    event = created("s1", 1)
    fold = StateFold("e1")
    fold.apply(event)
    frame = json.loads(state_frame(fold.snapshot()))
    assert frame["payload"]["collections"]["sessions"]["entries"] == [json.loads(event.to_json())]
    assert frame == json.loads(json.dumps(frame))  # plain JSON, no raw newline
    assert "\n" not in state_frame(fold.snapshot())


def test_state_frame_and_state_payload_agree():
    """Broadcaster.state() returns the frame's payload."""
    fold = StateFold("e1")
    fold.apply_all([created("s1", 1), cron(2), gateway(3)])
    snapshot = fold.snapshot()
    assert json.loads(state_frame(snapshot))["payload"] == json.loads(
        json.dumps(state_payload(snapshot))
    )


def test_a_custom_type_declares_its_collection(registry):
    """event_type(collection=, key=) on a custom type: the key is the Python field name."""

    @event_type("deploy.finished", collection="deploys", key="service_name")
    class DeployFinished:
        service_name: str
        duration_ms: int

    assert state_rules()["deploy.finished"] == StateRule("deploys", "serviceName")
    event = Event("deploy.finished", {"serviceName": "api", "durationMs": 3}, id="e1:1")
    assert entry_key(event) == ("deploys", "api")
    fold = StateFold("e1")
    fold.apply(event)
    assert fold.keys("deploys") == ["api"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"collection": "deploys", "key": "nope"}, "not a field"),
        ({"collection": "deploys", "removes": True}, "removes=True needs key"),
        ({"collection": "deploys"}, "give key="),
        ({"collection": "deploys", "keep": 0}, "keep must be"),
        ({"collection": "deploys", "key": "service", "keep": 3}, "drop keep"),
        ({"key": "service"}, "need collection"),
        ({"collection": "no spaces"}, "wire name"),
        ({"collection": "sessions", "keep": 5}, "must agree"),
    ],
)
def test_a_declaration_that_does_not_fit_is_refused(registry, kwargs, message):
    """Bad state arguments raise ValueError at decoration, saying what to fix."""
    with pytest.raises(ValueError, match=message):

        @event_type("deploy.broken", **kwargs)
        class DeployBroken:
            service: str


def test_conflation_keys_follow_the_collections():
    """Entries of keyed collections and singletons conflate; cronRuns never does."""
    assert conflation_key(created("s1", 1)) == conflation_key(killed("s1", 2))
    assert conflation_key(created("s1", 1)) != conflation_key(created("s2", 2))
    assert conflation_key(gateway(1)) == ("gateway", None)
    assert conflation_key(cron(1)) is None
    assert conflation_key(Event("session.created", {})) is None


def test_subscribe_with_state_is_parsed():
    """subscribe {"state": true} asks for a state frame; a non-boolean is invalid_message."""
    p = ClientProtocol()
    actions = p.receive_text('{"type":"subscribe","payload":{"types":["*"],"state":true}}')
    assert actions == [Subscribe(("*",), None, True)]
    bad = p.receive_text('{"type":"subscribe","payload":{"state":"yes"}}')
    assert "invalid_message" in bad[0].text  # type: ignore[union-attr]


def test_state_on_the_connect_url_is_parsed():
    """?state=1 alone subscribes to everything with a state frame."""
    assert parse_connect_query("state=1").subscribe == Subscribe(("*",), None, True)
    both = parse_connect_query("types=agent.*&since=ab:3&state=true").subscribe
    assert both == Subscribe(("agent.*",), "ab:3", True)
    assert parse_connect_query("state=0").subscribe is None


def test_broadcaster_state_returns_the_fold_and_counts_evictions():
    """await Broadcaster.state() is the state frame's payload; evictions show in stats()."""
    from livepanel import Broadcaster

    async def go() -> tuple[dict[str, object], dict[str, object]]:
        broadcaster = Broadcaster(state_limit=2)
        for n in range(3):
            payload = {"sessionKey": f"s{n}", "agentId": "a1", "kind": "direct"}
            broadcaster.publish("session.created", payload)
        state = await broadcaster.state()
        stats = broadcaster.stats()
        await broadcaster.close()
        return state, stats

    state, stats = asyncio.run(go())
    entries = state["collections"]["sessions"]["entries"]  # type: ignore[index]
    assert [e["payload"]["sessionKey"] for e in entries] == ["s1", "s2"]
    assert stats["state_evicted"] == 1
    assert stats["conflated"] == 0


def test_broadcaster_refuses_an_unknown_slow_consumer_policy():
    """slow_consumer names one of the three policies."""
    from livepanel import Broadcaster, ConfigurationError

    Broadcaster(slow_consumer="conflate")
    with pytest.raises(ConfigurationError, match="'conflate'"):
        Broadcaster(slow_consumer="merge")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="state_limit"):
        Broadcaster(state_limit=0)


def test_a_backend_without_state_answers_as_if_no_state_was_asked(caplog):
    """A Backend that keeps no state: no state frame, a warning, live events still flow."""
    from livepanel import Broadcaster, MemoryBackend
    from livepanel.state import StateSnapshot

    class Stateless(MemoryBackend):
        async def state(self) -> StateSnapshot:
            raise NotImplementedError("Stateless keeps no state")

    async def go() -> list[str]:
        broadcaster = Broadcaster(Stateless())
        async with broadcaster.connection() as conn:
            await conn.subscribe(["*"], None, state=True)
            broadcaster.publish("session.killed", {"sessionKey": "s1", "agentId": "a1"})
            kinds = [json.loads(frame.text)["type"] for frame in conn.take()]
        await broadcaster.close()
        return kinds

    with caplog.at_level(logging.WARNING, logger="livepanel"):
        assert asyncio.run(go()) == ["session.killed"]
    assert any("cannot read the state" in r.getMessage() for r in caplog.records)
