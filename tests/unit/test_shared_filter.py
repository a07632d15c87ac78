"""Connections that subscribe alike share one type filter; a client that sends ever new
globs cannot grow the shared set past SHARED_FILTERS, and every filter still matches."""

from __future__ import annotations

import asyncio

import livepanel.type_filter as type_filter
from livepanel import Broadcaster
from livepanel.type_filter import SHARED_FILTERS, TypeFilter, shared_filter


def test_connections_that_subscribe_alike_share_one_filter() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        broadcaster = Broadcaster()
        async with broadcaster.connection() as one, broadcaster.connection() as two:
            fresh = one.filter is two.filter  # the default: every type
            one.set_types(["session.*", "agent.status"])
            two.set_types(["session.*", "agent.status"])
            alike = one.filter is two.filter
            two.set_types(["cron.*"])
            apart = one.filter is not two.filter and not two.everything
        await broadcaster.close()
        return fresh, alike, apart

    assert asyncio.run(scenario()) == (True, True, True)


def test_ever_new_globs_from_a_hostile_client_stay_bounded_and_correct() -> None:
    """Far more distinct glob lists than are kept: the shared set stops at its bound, and
    the filters built beyond it answer exactly as a filter of their own would."""
    before = len(type_filter._shared)
    filters = [shared_filter([f"t{n}.*", f"exact.{n}"]) for n in range(SHARED_FILTERS * 3)]
    assert len(type_filter._shared) <= SHARED_FILTERS
    assert len(type_filter._shared) >= min(before, SHARED_FILTERS)
    for n in (0, SHARED_FILTERS - 1, SHARED_FILTERS * 3 - 1):
        mine = filters[n]
        own = TypeFilter([f"t{n}.*", f"exact.{n}"])
        for kind in (f"t{n}.x", f"exact.{n}", f"t{n + 1}.x", "exact.other", f"t{n}"):
            assert mine.matches(kind) == own.matches(kind), (n, kind)
