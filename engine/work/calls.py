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
    if inspect.iscoroutinefunction(function):
        return await function(*args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(threads, functools.partial(function, *args, **kwargs))


@functools.lru_cache(maxsize=256)
def _is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function)


async def ordered_map(
    items: Iterable[T], function: Callable[[T], Awaitable[R]], limit: int
) -> AsyncIterator[R]:
    """Yield `function(item)` for each item in input order, with at most `limit` calls running.

    Items are pulled lazily, so memory holds at most `limit` pending items. When a call raises,
    the calls still pending are cancelled and the error propagates.
    """
    pending: deque[asyncio.Future[R]] = deque()
    try:
        for item in items:
            pending.append(asyncio.ensure_future(function(item)))
            if len(pending) >= limit:
                yield await pending.popleft()
        while pending:
            yield await pending.popleft()
    finally:
        for future in pending:
            future.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
