"""One transform call as Rivulet makes it: rate limits, in-flight caps, retries, repairs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from tenacity import AsyncRetrying, RetryCallState

from engine.define.feature_views import BatchFeatureView
from engine.runtime.adaptive import AdaptiveGate
from engine.runtime.calls import CallTimeout, call
from engine.runtime.dispatch import Dispatch
from engine.runtime.limits import Limits
from engine.runtime.resources import ResourcePool
from engine.runtime.retrying import tenacity_args
from engine.runtime.stats import CallStats
from engine.runtime.stopping import Stopper
from engine.runtime.transient import transient_cause


class FailedCall(Exception):
    """A call that failed for good; carries the last error and the attempts made."""

    def __init__(self, error: Exception, attempts: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts


class Caller:
    """Calls a view's transform under its resources' limits, retrying by its retry policy.

    Each attempt holds an in-flight place and a rate-limit token of every resource the view
    uses. An attempt past the view's call timeout fails with CallTimeout, which is retried
    as a transient error. After a failure each resource is told, so a broken one is repaired
    before the next attempt. Backoff waits end when `stopper` stops. Raises FailedCall when
    the error is not retryable or attempts run out.
    """

    def __init__(
        self,
        view: BatchFeatureView,
        pool: ResourcePool,
        limits: Limits,
        stats: CallStats,
        threads: Executor,
        stopper: Stopper,
    ) -> None:
        self._view = view
        self._timeout = view.call_timeout
        self._stopper = stopper
        self._providers = [provider for _, provider in view.resource_providers]
        self._pool = pool
        self._limits = limits
        self._stats = stats
        self._threads = threads
        broken = lambda exc: any(pool.is_broken_by(p, exc) for p in self._providers)  # noqa: E731
        self._retry_args = tenacity_args(view.retry_policy, also=broken)
        self.dispatch = Dispatch(view.concurrency)  # rows per thread task, tasks at once
        self._gate = AdaptiveGate(view.name, view.concurrency, stats, stopper)  # AIMD on 429s

    @property
    def runs_rows_in_chunks(self) -> bool:
        """A sync transform whose resources have no rate limit or in-flight cap can run
        several rows per thread task, with no per-row bookkeeping unless a row fails."""
        if self._gate.paced:  # since a 429, each call waits its turn at the gate
            return False
        uncapped = all(
            p.max_concurrency is None and p.thread_safety != "serialize" for p in self._providers
        )
        return uncapped and not self._view.is_async and self._limits.unlimited(self._providers)

    async def __call__(self, data: Any, context: Any) -> tuple[Any, int]:
        """The transform's result and the number of attempts it took."""
        kwargs = {"context": context} if self._view.takes_context else {}
        try:  # most calls succeed at once: keep tenacity's bookkeeping off that path
            return await self._attempt(self._view.function, data, kwargs), 1
        except Exception as exc:
            return await self._retry(data, kwargs, exc)

    async def call_rows(self, rows: list[Any], context: Any) -> list[tuple[Any, int] | FailedCall]:
        """Each row's (result, attempts), or its FailedCall: the rows run one after another
        on one thread; a row that fails goes on through the usual retries."""
        if self._gate.paced:  # since a 429, each row waits its turn at the gate
            return [await self._outcome(row, context) for row in rows]
        kwargs = {"context": context} if self._view.takes_context else {}
        generations = [(p, self._pool.generation(p)) for p in self._providers]
        epoch = self._gate.start(len(rows))
        loop = asyncio.get_running_loop()
        outcomes: list[tuple[bool, Any]] = []
        seconds: list[float] = []
        abandoned = threading.Event()
        running = loop.run_in_executor(
            self._threads, _run_rows, self._view.function, rows, kwargs, outcomes, seconds,
            abandoned,
        )  # fmt: skip
        try:
            cpu = await asyncio.wait_for(running, self._timeout)
        except TimeoutError:
            abandoned.set()  # the thread stops after the row it is stuck on
            done = min(len(outcomes), len(seconds))  # copies: the thread may still append
            outcomes, seconds = outcomes[:done], seconds[:done]
            stuck = CallTimeout(
                f"the call did not return within its timeout of {self._timeout:g} s"
            )
            outcomes.append((False, stuck))
            seconds.append(self._timeout)
            rest = rows[len(outcomes) :]
            rows = rows[: len(outcomes)]
        else:
            rest = []
            self.dispatch.observe(len(rows), sum(seconds), cpu)
        self._stats.calls += len(rows)
        self._stats.record_latencies(seconds)
        results: list[tuple[Any, int] | FailedCall] = []
        for row, (ok, value) in zip(rows, outcomes, strict=True):
            if ok:
                results.append((value, 1))
                continue
            self._gate.end(epoch, value)
            if transient_cause(value) == "429":
                self._stats.throttled += 1
            for provider, generation in generations:
                await self._pool.report(provider, value, generation)
            try:
                results.append(await self._retry(row, kwargs, value))
            except FailedCall as failed:
                results.append(failed)
        results += [await self._outcome(row, context) for row in rest]  # each on its own
        return results

    async def _outcome(self, row: Any, context: Any) -> tuple[Any, int] | FailedCall:
        """One row's (result, attempts), or its FailedCall."""
        try:
            return await self(row, context)
        except FailedCall as failed:
            return failed

    async def _retry(self, data: Any, kwargs: dict, first_error: Exception) -> tuple[Any, int]:
        """Go on after a failed first attempt, as the retry policy says."""
        attempts = 1
        try:
            async for attempt in AsyncRetrying(
                **self._retry_args, before_sleep=self._count_retry, sleep=self._stopper.sleep
            ):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    if attempts == 1:
                        raise first_error  # tenacity judges the first failure like the others
                    result = await self._attempt(self._view.function, data, kwargs)
        except Exception as exc:
            self._stats.failed_calls += 1
            raise FailedCall(exc, attempts) from exc
        return result, attempts

    async def _attempt(self, function: Callable[..., Any], data: Any, kwargs: dict) -> Any:
        generations = [(p, self._pool.generation(p)) for p in self._providers]
        async with self._gate.attempt(), self._limits.slot(self._providers):
            began = time.perf_counter()
            error: Exception | None = None
            try:
                return await call(self._threads, function, data, timeout=self._timeout, **kwargs)
            except Exception as exc:
                error = exc
                if transient_cause(exc) == "429":
                    self._stats.throttled += 1
                raise
            finally:
                self._stats.calls += 1
                self._stats.record_latency(time.perf_counter() - began)
                for provider, generation in generations:
                    await self._pool.report(provider, error, generation)

    def _count_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        cause = transient_cause(error) if error else None
        self._stats.retries[cause or type(error).__name__] += 1


def _run_rows(
    function: Callable[..., Any],
    rows: list[Any],
    kwargs: dict,
    outcomes: list[tuple[bool, Any]],
    seconds: list[float],
    abandoned: threading.Event,
) -> float:
    """On a worker thread: append each row's (succeeded, result or error) to `outcomes` and
    how long it took to `seconds`, until the rows end or the caller abandons the chunk;
    return the CPU time this thread spent on them."""
    cpu = time.thread_time()
    for row in rows:
        if abandoned.is_set():
            break
        began = time.perf_counter()
        try:
            outcomes.append((True, function(row, **kwargs)))
        except StopIteration as exc:  # must not cross into asyncio (see calls.call)
            outcomes.append((False, RuntimeError(f"StopIteration escaped the call: {exc!r}")))
        except Exception as exc:
            outcomes.append((False, exc))
        seconds.append(time.perf_counter() - began)
    return time.thread_time() - cpu
