"""One call as Rivulet makes it: rate limits, in-flight caps, retries, repairs.

What to call comes as a `CallSpec`, a plain value: the runtime knows nothing of the view
(batch or realtime) that declared it.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenacity import AsyncRetrying, RetryCallState

from engine.define.policies import RetryPolicy
from engine.define.resources import ResourceProvider
from engine.runtime.adaptive import AdaptiveGate
from engine.runtime.dispatch import Dispatch
from engine.runtime.inflight import CallTimeout, Places, call
from engine.runtime.limits import Limits
from engine.runtime.resources import ResourcePool
from engine.runtime.retrying import tenacity_args
from engine.runtime.stats import CallStats
from engine.runtime.stopping import Stopper
from engine.runtime.transient import transient_cause


class Declared(Protocol):
    """What a declaration (a batch or realtime feature view) tells the runtime about its
    transform."""

    name: str
    function: Callable[..., Any]
    resource_providers: tuple[tuple[str, ResourceProvider], ...]
    concurrency: int

    @property
    def takes_context(self) -> bool: ...
    @property
    def retry_policy(self) -> RetryPolicy: ...
    @property
    def call_timeout(self) -> float: ...


@dataclass(frozen=True, kw_only=True)
class CallSpec:
    """What to call and how: a function, the resources it uses, and its call policy.

    `function` takes the data (a row, a frame, a request), and `context=` when
    `takes_context`. Each attempt holds a place and a token of every provider in `providers`,
    may take `timeout` seconds, and is retried by `retry`; up to `concurrency` calls may be
    in flight at once.

    Example:
        spec = CallSpec(name="score", function=score, providers=(api,),
                        retry=RetryPolicy(max_attempts=3), timeout=5.0, concurrency=8)
    """

    name: str
    function: Callable[..., Any]
    timeout: float
    concurrency: int
    takes_context: bool = False
    providers: tuple[ResourceProvider, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    inline: bool = False  # a sync function run on the loop itself, no thread (no timeout)

    @classmethod
    def of(cls, declared: Declared) -> CallSpec:
        """How to call a declared transform: with its resources, under its retry policy,
        timeout and concurrency."""
        return cls(
            name=declared.name,
            function=declared.function,
            takes_context=declared.takes_context,
            providers=tuple(provider for _, provider in declared.resource_providers),
            retry=declared.retry_policy,
            timeout=declared.call_timeout,
            concurrency=declared.concurrency,
        )

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)


def spread(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function(*inputs, context=...)` as a function of one value, since the call runtime
    hands its function one: a tuple of inputs (by position) or a dict of them (by name)."""

    def arguments(inputs: tuple[Any, ...] | dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        return ((), inputs) if isinstance(inputs, dict) else (inputs, {})

    if inspect.iscoroutinefunction(function):

        async def call_async(inputs: tuple[Any, ...] | dict[str, Any], **kwargs: Any) -> Any:
            args, named = arguments(inputs)
            return await function(*args, **named, **kwargs)

        return call_async

    def call(inputs: tuple[Any, ...] | dict[str, Any], **kwargs: Any) -> Any:
        args, named = arguments(inputs)
        return function(*args, **named, **kwargs)

    return call


class FailedCall(Exception):
    """A call that failed for good; carries the last error and the attempts made."""

    def __init__(self, error: Exception, attempts: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts


class Caller:
    """Calls a spec's function under its resources' limits, retrying by its retry policy.

    Each attempt holds an in-flight place and a rate-limit token of every resource the spec
    uses. An attempt past the spec's timeout fails with CallTimeout, which is retried as a
    transient error. After a failure each resource is told, so a broken one is repaired
    before the next attempt. Backoff waits end when `stopper` stops. Raises FailedCall when
    the error is not retryable or attempts run out.

    Example:
        caller = Caller(spec, pool, limits, stats, threads, stopper)
        result, attempts = await caller(row, context)
    """

    def __init__(
        self,
        spec: CallSpec,
        pool: ResourcePool,
        limits: Limits,
        stats: CallStats,
        threads: Executor,
        stopper: Stopper,
    ) -> None:
        self.spec = spec
        self._stopper = stopper
        self._pool = pool
        self._limits = limits
        self._stats = stats
        self._threads = threads

        def broken(exc: BaseException) -> bool:  # retried too: the next attempt gets a new one
            return any(pool.is_broken_by(p, exc) for p in spec.providers)

        self._retry_args = tenacity_args(spec.retry, also=broken)
        self.dispatch = Dispatch(spec.concurrency)  # rows per thread task, tasks at once
        self.places = Places()  # calls in flight, over every interval run at once
        self._gate = AdaptiveGate(spec.name, spec.concurrency, stats, stopper)  # AIMD on 429s

    @property
    def runs_rows_in_chunks(self) -> bool:
        """A sync function whose resources have no rate limit or in-flight cap can run
        several rows per thread task, with no per-row bookkeeping unless a row fails."""
        if self._gate.paced:  # since a 429, each call waits its turn at the gate
            return False
        providers = self.spec.providers
        uncapped = all(
            p.max_concurrency is None and p.thread_safety != "serialize" for p in providers
        )
        return uncapped and not self.spec.is_async and self._limits.unlimited(providers)

    async def __call__(self, data: Any, context: Any) -> tuple[Any, int]:
        """The function's result and the number of attempts it took."""
        return await self._call(data, self._kwargs(context))

    async def call_rows(self, rows: list[Any], context: Any) -> list[tuple[Any, int] | FailedCall]:
        """Each row's (result, attempts), or its FailedCall: the rows run one after another
        on one thread; a row that fails goes on through the usual attempts."""
        kwargs = self._kwargs(context)
        if self._gate.paced:  # since a 429, each row waits its turn at the gate
            return [await self._outcome(row, kwargs) for row in rows]
        generations = self._generations()
        epoch = self._gate.start(len(rows))
        loop = asyncio.get_running_loop()
        outcomes: list[tuple[bool, Any]] = []
        seconds: list[float] = []
        abandoned = threading.Event()
        running = loop.run_in_executor(
            self._threads, _run_rows, self.spec.function, rows, kwargs, outcomes, seconds,
            abandoned,
        )  # fmt: skip
        timeout = self.spec.timeout
        try:
            cpu = await asyncio.wait_for(running, timeout)
        except TimeoutError:
            abandoned.set()  # the thread stops after the row it is stuck on
            done = min(len(outcomes), len(seconds))  # copies: the thread may still append
            outcomes, seconds = outcomes[:done], seconds[:done]
            stuck = CallTimeout(f"the call did not return within its timeout of {timeout:g} s")
            outcomes.append((False, stuck))
            seconds.append(timeout)
            rest = rows[len(outcomes) :]
            rows = rows[: len(outcomes)]
        else:
            rest = []
            self.dispatch.observe(seconds, cpu)
        self._stats.calls += len(rows)
        self._stats.record_latencies(seconds)
        results: list[tuple[Any, int] | FailedCall] = []
        for row, (ok, value) in zip(rows, outcomes, strict=True):
            if ok:
                results.append((value, 1))
                continue
            self._gate.end(epoch, value)
            await self._ended(generations, value)  # the row's first attempt, ended
            results.append(await self._outcome(row, kwargs, first_error=value))
        results += [await self._outcome(row, kwargs) for row in rest]  # each on its own
        return results

    async def _outcome(
        self, data: Any, kwargs: dict, first_error: Exception | None = None
    ) -> tuple[Any, int] | FailedCall:
        """One call's (result, attempts), or its FailedCall."""
        try:
            return await self._call(data, kwargs, first_error)
        except FailedCall as failed:
            return failed

    async def _call(
        self, data: Any, kwargs: dict, first_error: Exception | None = None
    ) -> tuple[Any, int]:
        """Every attempt of one call, as the retry policy says: (result, attempts).

        `first_error` is how a first attempt made elsewhere (a row of a chunk) ended; it is
        judged like any other failure.
        """
        if first_error is None:
            try:  # most calls succeed at once: keep tenacity's bookkeeping off that path
                return await self._attempt(data, kwargs), 1
            except Exception as exc:
                first_error = exc
        attempts = 1
        try:
            async for attempt in AsyncRetrying(
                **self._retry_args, before_sleep=self._count_retry, sleep=self._stopper.sleep
            ):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    if attempts == 1:
                        raise first_error  # tenacity judges the first failure like the others
                    result = await self._attempt(data, kwargs)
        except Exception as exc:
            self._stats.failed_calls += 1
            raise FailedCall(exc, attempts) from exc
        return result, attempts

    async def _attempt(self, data: Any, kwargs: dict) -> Any:
        """One attempt, holding its place at the gate and its limits while it runs."""
        spec, generations = self.spec, self._generations()
        async with self._gate.attempt(), self._limits.slot(spec.providers):
            began = time.perf_counter()
            error: Exception | None = None
            try:
                if spec.inline:
                    return spec.function(data, **kwargs)
                return await call(
                    self._threads, spec.function, data, timeout=spec.timeout, **kwargs
                )
            except Exception as exc:
                error = exc
                raise
            finally:
                self._stats.calls += 1
                self._stats.record_latency(time.perf_counter() - began)
                await self._ended(generations, error)

    async def _ended(
        self, generations: list[tuple[ResourceProvider, int]], error: Exception | None
    ) -> None:
        """How an attempt ended, told to the stats (a 429) and to each resource it used, so
        a broken one is repaired (unless another call already replaced the instance seen)."""
        if error is not None and transient_cause(error) == "429":
            self._stats.throttled += 1
        for provider, generation in generations:
            await self._pool.report(provider, error, generation)

    def _generations(self) -> list[tuple[ResourceProvider, int]]:
        """The instance of each resource an attempt about to start will use."""
        return [(p, self._pool.generation(p)) for p in self.spec.providers]

    def _kwargs(self, context: Any) -> dict[str, Any]:
        return {"context": context} if self.spec.takes_context else {}

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
        except StopIteration as exc:  # must not cross into asyncio (see inflight.call)
            outcomes.append((False, RuntimeError(f"StopIteration escaped the call: {exc!r}")))
        except Exception as exc:
            outcomes.append((False, exc))
        seconds.append(time.perf_counter() - began)
    return time.thread_time() - cpu
