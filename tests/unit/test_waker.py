"""The rounds that wake writers: at most WAKE_CHUNK per turn, and a lingering round that
starts once the publisher stops instead of waiting out its linger.

Counted in event-loop turns, not in time: what a round does does not depend on how fast
the machine is.
"""

from __future__ import annotations

import asyncio
import gc
import time

from livepanel.hub import WAKE_CHUNK, Waker


class Writer:
    """What the waker needs of a connection: ``flush()``; records the turn it was woken."""

    def __init__(self, turns: list[int]) -> None:
        self.turns = turns
        self.woken_at: int | None = None

    def flush(self, now: float, pump: object) -> None:
        self.woken_at = len(self.turns)


async def run_turns(turns: list[int], count: int, each: object = None) -> None:
    """Let ``count`` event-loop turns pass, calling ``each()`` once per turn."""
    for _ in range(count):
        turns.append(1)
        if callable(each):
            each()
        await asyncio.sleep(0)


def test_a_round_wakes_at_most_a_chunk_of_writers_per_turn() -> None:
    async def main() -> list[int]:
        turns: list[int] = []
        waker = Waker(asyncio.get_running_loop(), turns=0)
        writers = [Writer(turns) for _ in range(3 * WAKE_CHUNK + 10)]
        for writer in writers:
            waker.add(writer)  # type: ignore[arg-type]
        await run_turns(turns, 10)
        woken = [w.woken_at for w in writers]
        assert None not in woken
        return [woken.count(turn) for turn in sorted(set(woken))]  # type: ignore[arg-type]

    per_turn = asyncio.run(main())
    assert per_turn == [WAKE_CHUNK, WAKE_CHUNK, WAKE_CHUNK, 10]


def test_waking_a_thousand_writers_starts_no_garbage_collection() -> None:
    """The writers' wakes (handles that live until the writer runs) stay under CPython's
    young-generation threshold: a round of 1,000 collects nothing."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        waker = Waker(loop, turns=0)
        woken: list[int] = []
        everyone = loop.create_future()

        class Parked:
            """A writer as Connection.write() is one: a future per wait, dropped on wake."""

            def __init__(self) -> None:
                self.future: asyncio.Future[None] = loop.create_future()

            def flush(self, now: float, pump: object) -> None:
                self.future.set_result(None)

            async def run(self) -> None:
                while True:
                    await self.future
                    self.future = loop.create_future()
                    woken.append(1)
                    if len(woken) == 1000:
                        everyone.set_result(None)

        writers = [Parked() for _ in range(1000)]
        tasks = [loop.create_task(w.run()) for w in writers]
        await asyncio.sleep(0)
        starts: list[str] = []
        gc.callbacks.append(lambda phase, info: starts.append(phase))
        try:
            gc.collect()
            starts.clear()
            for writer in writers:
                waker.add(writer)  # type: ignore[arg-type]
            await everyone
        finally:
            gc.callbacks.pop()
            for task in tasks:
                task.cancel()
        return starts.count("start")

    assert asyncio.run(main()) == 0


def test_a_lingering_round_starts_as_soon_as_the_publisher_stops() -> None:
    """A batching round lingers (here up to 1 s) while events keep coming, one per turn, and
    starts within a few turns of the last one, long before its linger ran out."""

    async def main() -> tuple[int | None, float]:
        loop = asyncio.get_running_loop()
        turns: list[int] = []
        waker = Waker(loop, turns=1, cap=1.0)
        waker._linger = 1.0  # as after a round under load
        writer = Writer(turns)
        began = loop.time()
        waker.add(writer)  # type: ignore[arg-type]

        def publish() -> None:
            waker.events += 1  # what the hub counts per fan-out

        await run_turns(turns, 30, publish)  # a publisher that publishes every turn
        assert writer.woken_at is None, "woken while events were still coming"
        await run_turns(turns, 10)  # then nothing
        return writer.woken_at, loop.time() - began

    woken_at, elapsed = asyncio.run(main())
    assert woken_at is not None
    assert 30 < woken_at <= 36, woken_at
    assert elapsed < 1.0  # well before the linger's timer


def test_a_lingering_round_without_any_new_event_starts_within_a_few_turns() -> None:
    async def main() -> int | None:
        turns: list[int] = []
        waker = Waker(asyncio.get_running_loop(), turns=1, cap=1.0)
        waker._linger = 1.0
        writer = Writer(turns)
        waker.add(writer)  # type: ignore[arg-type]
        await run_turns(turns, 8)
        return writer.woken_at

    woken_at = asyncio.run(main())
    assert woken_at is not None
    assert woken_at <= 5, woken_at


def test_writers_that_join_as_a_slow_round_ends_linger_for_the_next_one() -> None:
    """A round that took long (a loaded loop) makes the next one linger; a writer that joins
    between the end of that round and its measurement waits too, instead of starting a
    round of its own at once (which cost a whole round for a handful of events)."""

    async def main() -> tuple[int | None, int | None]:
        loop = asyncio.get_running_loop()
        turns: list[int] = []
        waker = Waker(loop, turns=0, cap=1.0)

        class Slow(Writer):
            def flush(self, now: float, pump: object) -> None:
                super().flush(now, pump)
                time.sleep(0.15)  # the round's writers take longer than a tenth of the cap

        first, second = Slow(turns), Writer(turns)
        waker.add(first)  # type: ignore[arg-type]
        joined = False

        def publish() -> None:
            nonlocal joined
            waker.events += 1
            if first.woken_at is not None and not joined:
                joined = True
                waker.add(second)  # type: ignore[arg-type]

        await run_turns(turns, 20, publish)  # events keep coming: the linger holds
        return first.woken_at, second.woken_at

    first_woken, second_woken = asyncio.run(main())
    assert first_woken is not None  # no linger yet: at once
    assert second_woken is None, second_woken
