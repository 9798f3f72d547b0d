"""Concurrent transform calls: sync ones on threads, async ones on the loop, results in order."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def call(
    threads: ThreadPoolExecutor, function: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """Await `function(*args, **kwargs)`: directly if it is async, else on a worker thread."""
    if _is_async(function):
        return await function(*args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(threads, _no_stop_iteration, function, args, kwargs)


def _no_stop_iteration(function: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Run `function`; a StopIteration it raises cannot cross into an asyncio future (the
    await would never return), so it becomes a RuntimeError."""
    try:
        return function(*args, **kwargs)
    except StopIteration as exc:
        raise RuntimeError(f"StopIteration escaped the call: {exc!r}") from exc


@functools.lru_cache(maxsize=256)
def _is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function)


async def ordered_map(
    items: Iterable[T], function: Callable[[T], Awaitable[R]], limit: int | Callable[[], int]
) -> AsyncIterator[R]:
    """Yield `function(item)` for each item in input order, with at most `limit` calls running
    (or `limit()`, asked before each new call).

    Items are pulled lazily, so memory holds at most `limit` pending items. When a call raises
    (or the consumer stops early), the calls still running are awaited before the error
    propagates: a call on a thread cannot be cancelled, and must not outlive its interval
    while holding a resource. Use it under `contextlib.aclosing` so that happens at once.
    """
    most = limit if callable(limit) else lambda: limit
    pending: deque[asyncio.Future[R]] = deque()
    try:
        for item in items:
            pending.append(asyncio.ensure_future(function(item)))
            while len(pending) >= most():
                yield await pending.popleft()
        while pending:
            yield await pending.popleft()
    finally:
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
