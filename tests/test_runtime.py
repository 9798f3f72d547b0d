"""The call runtime on its own: a plain function and a resource, no feature view, no worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from engine import RetryPolicy, resource_provider
from engine.define.resources import ResourceProvider
from engine.errors import Interrupted
from engine.runtime.caller import Caller, CallSpec, FailedCall
from engine.runtime.context import Resources
from engine.runtime.limits import Limits
from engine.runtime.resources import ResourcePool
from engine.runtime.stats import CallStats
from engine.runtime.stopping import Stopper
from engine.runtime.threads import DaemonThreads

T = TypeVar("T")


class Broken(Exception):
    """What a broken client raises; its provider declares it in `broken_on`."""


class Unavailable(Exception):
    status_code = 503


class Client:
    """A resource: doubles numbers, unless it is broken."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.closed = False

    def double(self, x: int) -> int:
        if self.broken:
            raise Broken("the connection pool is poisoned")
        return 2 * x

    def close(self) -> None:
        self.closed = True


def provider(built: list[Client], broken_first: bool = False) -> ResourceProvider:
    """A provider named "api" that appends each client it builds to `built`; with
    `broken_first`, the first client is broken."""

    @resource_provider(name="api", broken_on=(Broken,))
    def api() -> Client:
        built.append(Client(broken=broken_first and not built))
        return built[-1]

    return api


def double(x: int, context: Resources) -> int:
    return context["api"].double(x)


class NoBackoff(Stopper):
    """A Stopper whose backoff sleeps return at once, noting the seconds asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


class Runtime:
    """What a worker (or a server) holds for its calls: stats, resources, limits, threads."""

    def __init__(self, rates: dict[str, tuple[float, float]] | None = None) -> None:
        self.stats = CallStats()
        self.stopper = NoBackoff()
        self.pool = ResourcePool({}, self.stats, stopper=self.stopper)
        self.limits = Limits(rates or {}, self.stats, self.stopper)
        self.threads = DaemonThreads(4, "test-call")

    async def caller(self, spec: CallSpec) -> tuple[Caller, Resources]:
        """A Caller for `spec`, its resources built, and the context its function gets."""
        for each in spec.providers:
            await self.pool.acquire(each)
        caller = Caller(spec, self.pool, self.limits, self.stats, self.threads, self.stopper)
        context = Resources("The test call", {p.name: p for p in spec.providers}, self.pool)
        return caller, context

    async def close(self) -> None:
        await self.pool.close()
        self.threads.shutdown(wait=False)


def spec(api: ResourceProvider, function: Callable[..., Any] = double, **policy: Any) -> CallSpec:
    return CallSpec(
        name="double",
        function=function,
        takes_context=True,
        providers=(api,),
        timeout=5.0,
        concurrency=4,
        **policy,
    )


class ClockedLoop(asyncio.SelectorEventLoop):
    """An event loop on the test's clock: its timers, and so aiolimiter's buckets, move on
    only when the test moves `now`."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def time(self) -> float:
        return self.now


def run(main: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop | None = None) -> T:
    loop = loop or asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()


def test_a_call_that_succeeds_at_once_takes_one_attempt() -> None:
    async def main() -> tuple[int, int]:
        runtime = Runtime()
        caller, context = await runtime.caller(spec(provider([])))
        result = await caller(21, context)
        await runtime.close()
        assert runtime.stats.calls == 1 and not runtime.stats.retries
        assert runtime.stopper.slept == []
        return result

    assert run(main()) == (42, 1)


def test_a_transient_error_is_retried_until_the_call_succeeds() -> None:
    failures = [ConnectionError("reset by peer"), ConnectionError("reset by peer")]

    def flaky(x: int, context: Resources) -> int:
        if failures:
            raise failures.pop(0)
        return double(x, context)

    async def main() -> tuple[int, int]:
        runtime = Runtime()
        caller, context = await runtime.caller(spec(provider([]), flaky))
        result = await caller(21, context)
        await runtime.close()
        stats = runtime.stats
        assert stats.calls == 3 and stats.retries == {"connection": 2}
        assert stats.failed_calls == 0
        assert len(runtime.stopper.slept) == 2  # each backoff waited through the Stopper
        assert stats.rebuilds["api"] == 0  # two connection errors in a row break nothing
        return result

    assert run(main()) == (42, 3)


def test_a_call_whose_attempts_run_out_fails_with_the_last_error() -> None:
    def down(x: int, context: Resources) -> int:
        raise Unavailable("503 Service Unavailable")

    async def main() -> FailedCall:
        runtime = Runtime()
        retry = RetryPolicy(max_attempts=3)
        caller, context = await runtime.caller(spec(provider([]), down, retry=retry))
        with pytest.raises(FailedCall) as failed:
            await caller(21, context)
        await runtime.close()
        assert runtime.stats.calls == 3 and runtime.stats.retries == {"5xx": 2}
        assert runtime.stats.failed_calls == 1
        return failed.value

    failed = run(main())
    assert failed.attempts == 3 and isinstance(failed.error, Unavailable)


def test_a_rate_limit_lets_one_call_start_per_token() -> None:
    """4 calls a second, burst 1, on the loop's clock: with the clock standing still no call
    can start, and each quarter second the test moves it lets exactly one more through."""
    loop = ClockedLoop()
    starts: list[float] = []

    def timed(x: int, context: Resources) -> int:
        starts.append(loop.time())
        return double(x, context)

    async def main() -> list[tuple[int, int]]:
        runtime = Runtime(rates={"api": (4.0, 1.0)})
        caller, context = await runtime.caller(spec(provider([]), timed))
        await runtime.limits.take("api", 0)  # the bucket starts full at 0 s
        calls = [asyncio.ensure_future(caller(x, context)) for x in range(3)]
        pending = set(calls)
        while pending:
            loop.now += 0.25
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1
        await runtime.close()
        assert runtime.stats.limiter_wait_seconds > 0
        return [call.result() for call in calls]

    results = run(main(), loop)
    assert starts == [0.25, 0.5, 0.75]
    assert sorted(results) == [(0, 1), (2, 1), (4, 1)]


def test_a_broken_resource_is_rebuilt_once_and_the_call_retried() -> None:
    built: list[Client] = []

    async def main() -> tuple[int, int]:
        runtime = Runtime()
        caller, context = await runtime.caller(spec(provider(built, broken_first=True)))
        result = await caller(21, context)
        stats = runtime.stats
        assert stats.builds["api"] == 2 and stats.rebuilds["api"] == 1
        assert stats.teardowns["api"] == 1 and built[0].closed and not built[1].closed
        assert stats.retries == {"Broken": 1}
        await runtime.close()
        assert stats.teardowns["api"] == 2 and built[1].closed
        return result

    assert run(main()) == (42, 2)


def test_rows_of_a_chunk_that_failed_take_the_same_attempts() -> None:
    """Every row of a chunk fails on the broken first client: the resource is rebuilt once
    (the later rows saw the instance already replaced), and each row is retried."""
    built: list[Client] = []

    async def main() -> list[tuple[Any, int] | FailedCall]:
        runtime = Runtime()
        caller, context = await runtime.caller(spec(provider(built, broken_first=True)))
        assert caller.runs_rows_in_chunks
        results = await caller.call_rows([1, 2, 3], context)
        await runtime.close()
        stats = runtime.stats
        assert stats.calls == 6 and stats.retries == {"Broken": 3}
        assert stats.builds["api"] == 2 and stats.rebuilds["api"] == 1
        assert stats.teardowns["api"] == 2
        return results

    assert run(main()) == [(2, 2), (4, 2), (6, 2)]


def test_a_build_finished_as_a_stop_woke_its_wait_is_still_torn_down() -> None:
    built: list[Client] = []
    runtime = Runtime()

    @resource_provider(name="api")
    async def api() -> Client:
        runtime.stopper.stop()  # wakes the wait in the same loop step the build ends in
        built.append(Client())
        return built[-1]

    async def main() -> None:
        with pytest.raises(Interrupted):
            await runtime.pool.acquire(api)
        await runtime.close()

    run(main())
    assert runtime.stats.builds["api"] == runtime.stats.teardowns["api"] == 1
    assert built[0].closed
