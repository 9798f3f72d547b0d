"""Calls in flight: results keep their order, and a slow call does not hold back the rest."""

from __future__ import annotations

import asyncio

from engine.runtime.inflight import ordered_map


def test_a_slow_call_does_not_hold_back_later_calls() -> None:
    async def main() -> list[int]:
        released = asyncio.Event()

        async def call(item: int) -> int:
            if item == 0:
                await released.wait()  # the oldest call waits for a later one to let it go
            elif item == 5:
                released.set()
            return item * 10

        return [result async for result in ordered_map(range(20), call, 2)]

    # Were the oldest call to block new ones, item 5 would never start: a timeout, not a hang.
    results = asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert results == [item * 10 for item in range(20)]


def test_results_held_for_a_slow_call_are_bounded() -> None:
    async def main() -> tuple[list[int], int]:
        released = asyncio.Event()
        started: list[int] = []

        async def call(item: int) -> int:
            started.append(item)
            if item == 0:
                await released.wait()
            return item

        async def release_later() -> int:
            for _ in range(100):  # ample turns of the loop for the quick calls to finish
                await asyncio.sleep(0)
            held = len(started)
            released.set()
            return held

        watcher = asyncio.create_task(release_later())
        results = [result async for result in ordered_map(range(50), call, 2)]
        return results, await watcher

    results, started_while_held = asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert results == list(range(50))
    assert started_while_held == 8  # 4 x the limit of 2, then it waits for the oldest
