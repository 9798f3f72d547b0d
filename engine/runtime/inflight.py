"""Calls in flight: one call with its timeout (sync ones on threads, async ones on the loop),
and many at once with results in input order (`ordered_map`), under places (`Places`) that
several maps may share."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_WINDOW = 4  # items started but not yet yielded, per call allowed to run


class CallTimeout(TimeoutError):
    """A call that did not return within its timeout; retried like any other timeout."""


async def call(
    threads: Executor,
    function: Callable[..., Any],
    *args: Any,
    timeout: float | None = None,
    **kwargs: Any,
) -> Any:
    """Await `function(*args, **kwargs)`: directly if it is async, else on a worker thread;
    CallTimeout after `timeout` seconds. A sync call past its timeout is abandoned, as a
    thread cannot be stopped: it runs on to its end on a daemon thread."""
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            if _is_async(function):
                return await function(*args, **kwargs)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(threads, _no_stop_iteration, function, args, kwargs)
    except TimeoutError:
        if not scope.expired():  # the function's own TimeoutError
            raise
        raise CallTimeout(f"the call did not return within its timeout of {timeout:g} s") from None


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


class Places:
    """The places for calls in flight that several `ordered_map`s share (one view's
    intervals that a worker runs at once), so they hold at most their limit together."""

    def __init__(self) -> None:
        self.taken = 0
        self.limit = 0  # as the last map to check asked it
        self._freed = asyncio.Event()

    @property
    def full(self) -> bool:
        return self.taken >= self.limit

    def take(self) -> None:
        self.taken += 1

    def give_back(self, _: object = None) -> None:
        self.taken -= 1
        self._freed.set()

    async def freed(self) -> None:
        """Return once a place is given back (or a call ends)."""
        self._freed.clear()
        await self._freed.wait()


async def ordered_map(
    items: Iterable[T],
    function: Callable[[T], Awaitable[R]],
    limit: int | Callable[[], int],
    places: Places | None = None,
) -> AsyncIterator[R]:
    """Yield `function(item)` for each item in input order, with at most `limit` calls running
    (or `limit()`, asked before each new call), counted in `places` when given: calls of
    other maps there count too.

    A call that finishes early frees its place at once, even while an older call is still
    running: its result waits to be yielded in order. So one slow call does not hold back
    the rest, and memory holds at most `_WINDOW` times `limit` items started but not
    yielded. When a call raises (or the consumer stops early), the calls still running are
    awaited before the error propagates (each within its timeout): a call must not outlive
    its interval while holding a resource. Cancelling the consumer cancels the calls instead,
    abandoning those on threads. Use it under `contextlib.aclosing` so that happens at once.
    """
    most = limit if callable(limit) else lambda: limit
    shared = Places() if places is None else places
    pending: deque[asyncio.Future[R]] = deque()

    try:
        for item in items:
            while True:
                while pending and pending[0].done():
                    yield pending.popleft().result()
                allowed = shared.limit = most()
                if shared.taken < allowed and len(pending) < _WINDOW * allowed:
                    break
                await shared.freed()
            future = asyncio.ensure_future(function(item))
            shared.take()
            future.add_done_callback(shared.give_back)
            pending.append(future)
        while pending:
            yield await pending.popleft()
    except asyncio.CancelledError:
        for future in pending:  # cancelled: abandon the calls, even those on threads
            future.cancel()
        raise
    finally:
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
