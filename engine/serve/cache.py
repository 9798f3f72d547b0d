"""A realtime view's answers kept by request inputs, with one call per concurrent key.

The store is cachetools' `TTLCache`: an entry expires `ttl` after it was computed, and when
the cache is full the least recently used entry goes first. Concurrent requests with the same
inputs wait for the one call already running ("single flight") instead of making their own.
Only answers are kept: a failed call is not cached, and its waiters get its error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from cachetools import TTLCache

from engine.define.feature_views import Cache


class AnswerCache:
    """Answers by key, computed at most once at a time per key; `hits` counts answers given
    without a call of their own (kept or shared with a running call), `misses` the calls.

    Example:
        cache = AnswerCache(Cache(ttl=60))
        features = await cache.get(fields, lambda: compute(fields))
    """

    def __init__(self, cache: Cache, clock: Callable[[], float] = time.monotonic) -> None:
        self._answers: TTLCache = TTLCache(
            cache.max_entries, cache.ttl.total_seconds(), timer=clock
        )
        self._running: dict[Hashable, asyncio.Task] = {}
        self.hits = 0
        self.misses = 0

    async def get(self, fields: Any, compute: Callable[[], Awaitable[Any]]) -> Any:
        key = _key(fields)
        try:
            answer = self._answers[key]
        except KeyError:
            pass
        else:
            self.hits += 1
            return answer
        task = self._running.get(key)
        if task is None:
            self.misses += 1
            task = self._running[key] = asyncio.ensure_future(self._fill(key, compute))
            task.add_done_callback(_retrieve)  # its error is seen even if every waiter left
        else:
            self.hits += 1
        # A waiter that gives up (its deadline, a disconnect) leaves the call to the others.
        return await asyncio.shield(task)

    async def _fill(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> Any:
        try:
            answer = await compute()
            self._answers[key] = answer
            return answer
        finally:
            del self._running[key]


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def _key(value: Any) -> Hashable:
    """A hashable form of request fields: dicts and lists become sorted tuples."""
    if isinstance(value, dict):
        return tuple(sorted((name, _key(item)) for name, item in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_key(item) for item in value)
    return value
