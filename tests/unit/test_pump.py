"""A round's pump joins a batch once for every batching writer that queued the same frames,
and never hands one writer's batch to another whose frames differ, even by one in the middle."""

from __future__ import annotations

import gc

from livepanel.events import Event
from livepanel.outbox import Frame
from livepanel.writer import Pump


def frame(n: int) -> Frame:
    event = Event("session.killed", {"sessionKey": f"s{n}", "agentId": "a1"}, id=f"e:{n}")
    return Frame(event, event.to_json())


def test_writers_with_the_same_frames_share_one_joined_text() -> None:
    shared = [frame(n) for n in range(5)]
    pump = Pump()
    first = pump.joined(list(shared))  # each writer's take() is a list of its own
    second = pump.joined(list(shared))
    assert first is second
    assert first == "\n".join(f.text for f in shared)


def test_a_batch_that_differs_only_in_the_middle_is_joined_anew() -> None:
    """Same length, same first and last frame (a filter that skips one type): not shared."""
    a, b, c, d = (frame(n) for n in range(4))
    pump = Pump()
    assert pump.joined([a, b, d]) == "\n".join([a.text, b.text, d.text])
    assert pump.joined([a, c, d]) == "\n".join([a.text, c.text, d.text])
    control = Frame(None, '{"type":"pong","payload":{}}')  # a connection's own frame
    assert pump.joined([a, control, d]) == "\n".join([a.text, control.text, d.text])


def test_a_round_that_ends_lets_go_of_its_last_batch() -> None:
    """forget(): the pump holds neither the last batch's list nor its text any more."""
    pump = Pump()
    batch = [frame(n) for n in range(3)]
    text = pump.joined(batch)
    assert any(held is batch for held in gc.get_referents(pump))
    pump.forget()
    held = gc.get_referents(pump)
    assert not any(h is batch or h is text for h in held)
    assert pump.joined(list(batch)) == text
