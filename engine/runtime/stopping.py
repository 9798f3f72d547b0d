"""A worker's stop request as its event loop sees it: every wait ends when the run stops.

Waiting for a rate-limit token, a retry's backoff or a resource build can last minutes (a
tiny rate, a long Retry-After, a provider that hangs). The first Ctrl-C or SIGTERM must not
wait that long: the waits wake at once and end in Interrupted, while calls already running
finish (each within its timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from engine.errors import Interrupted


class Stopper:
    """Wakes every wait entered through `waiting()` when `stop()` is called on the loop.

    Example:
        async with stopper.waiting():
            await limiter.acquire()
    """

    def __init__(self) -> None:
        self.stopped = False
        self._waiting: set[asyncio.Task] = set()
        self._woken: set[asyncio.Task] = set()

    def stop(self) -> None:
        """Stop: wake the waits under way and refuse new ones. Call it on the loop's thread."""
        self.stopped = True
        for task in self._waiting - self._woken:
            self._woken.add(task)
            task.cancel()

    @contextlib.asynccontextmanager
    async def waiting(self) -> AsyncIterator[None]:
        """A wait that `stop()` ends with Interrupted."""
        if self.stopped:
            raise _interrupted()
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if task not in self._woken:
                raise
            task.uncancel()
            raise _interrupted() from None
        finally:
            self._waiting.discard(task)
            self._woken.discard(task)

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep that `stop()` ends (tenacity's `sleep=` for retry backoff)."""
        async with self.waiting():
            await asyncio.sleep(seconds)


def _interrupted() -> Interrupted:
    return Interrupted("The run was interrupted before this interval was finished.")
