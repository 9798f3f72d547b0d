"""A worker's rate limiters and concurrency caps, one of each per resource provider."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence

from aiolimiter import AsyncLimiter

from engine.define.resources import ResourceProvider
from engine.runtime.shared_limits import SharedBuckets
from engine.runtime.stats import CallStats
from engine.runtime.stopping import Stopper


class Limits:
    """Token buckets (aiolimiter) and in-flight caps shared by every view and batch of a worker.

    `rates` maps a provider name to (requests per second, burst) for this worker: the run's
    limit divided by the number of workers, so that together they keep to it. A bucket
    starts full, not empty, so a run opens at the steady rate instead of with a burst.
    With `shared` (buckets in Redis), `rates` is the run's whole limit and every worker of
    every run takes from the same bucket instead.
    Waits end when `stopper` stops. `stats.limiter_wait_seconds` adds up the wall time
    during which at least one call was waiting for a token (not each call's wait).
    """

    def __init__(
        self,
        rates: Mapping[str, tuple[float, float]],
        stats: CallStats,
        stopper: Stopper | None = None,
        shared: SharedBuckets | None = None,
    ) -> None:
        self._rates = rates
        self._shared = shared
        self._stats = stats
        self._stopper = stopper or Stopper()
        self._limiters: dict[str, AsyncLimiter] = {}
        self._caps: dict[str, asyncio.Semaphore | None] = {}
        self._waiters = 0
        self._waiting_since = 0.0

    @contextlib.asynccontextmanager
    async def slot(self, providers: Sequence[ResourceProvider]) -> AsyncIterator[None]:
        """Hold one in-flight place of each capped provider and one token of each limited one."""
        async with contextlib.AsyncExitStack() as stack:
            for provider in providers:
                cap = self._cap(provider)
                if cap is not None:
                    await stack.enter_async_context(cap)
            for provider in providers:
                await self.take(provider.name, 1)
            yield

    def unlimited(self, providers: Sequence[ResourceProvider]) -> bool:
        """Whether none of the providers has a rate limit in this run."""
        return all(provider.name not in self._rates for provider in providers)

    async def take(self, name: str, tokens: float) -> None:
        """Wait for `tokens` of the named provider's bucket (no-op when it has no limit)."""
        if name not in self._rates:
            return
        if self._waiters == 0:
            self._waiting_since = time.perf_counter()
        self._waiters += 1
        try:
            if self._shared is not None:
                await self._shared.take(name, tokens)
                return
            limiter = await self._limiter(name)
            async with self._stopper.waiting():
                while tokens > 0:
                    chunk = min(tokens, limiter.max_rate)  # aiolimiter refuses more than that
                    await limiter.acquire(chunk)
                    tokens -= chunk
        finally:
            self._waiters -= 1
            if self._waiters == 0:
                self._stats.limiter_wait_seconds += time.perf_counter() - self._waiting_since

    async def _limiter(self, name: str) -> AsyncLimiter:
        if name not in self._limiters:
            rate, burst = self._rates[name]
            limiter = self._limiters[name] = AsyncLimiter(burst, burst / rate)
            async with self._stopper.waiting():
                await limiter.acquire(burst)  # start full: no opening burst
        return self._limiters[name]

    def _cap(self, provider: ResourceProvider) -> asyncio.Semaphore | None:
        if provider.name not in self._caps:
            size = 1 if provider.thread_safety == "serialize" else provider.max_concurrency
            self._caps[provider.name] = asyncio.Semaphore(size) if size else None
        return self._caps[provider.name]
