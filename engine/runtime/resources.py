"""A worker's resources: built on first need with retries, repaired when broken, torn down once.

Each provider is built once per worker ("shared" and "serialize"), or once per worker thread
("per_thread"). Every instance built is torn down exactly once: a shared one when a repair
replaces it, the rest at `close()`. A provider that cannot be built is remembered as failed,
so later tasks needing it fail at once with the same error.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from tenacity import AsyncRetrying, Retrying

from engine.define.resources import ResourceProvider
from engine.define.secrets import Secret
from engine.errors import ResourceError, RivuletError, one_line
from engine.runtime.context import ProviderContext, Secrets
from engine.runtime.retrying import tenacity_args
from engine.runtime.stats import CallStats
from engine.runtime.stopping import Stopper
from engine.runtime.threads import DaemonThreads
from engine.runtime.transient import is_connection_error

log = logging.getLogger("rivulet")
TEARDOWN_SECONDS = 10.0  # a teardown that hangs longer is abandoned, with a warning
LATE_BUILD_SECONDS = 2.0  # how long close() waits for a build a stop gave up on


class ResourcePool:
    """The resources of one worker, with their build, rebuild and teardown counts in `stats`."""

    def __init__(
        self,
        secret_values: Mapping[Secret, str],
        stats: CallStats,
        redact: Callable[[str], str] = lambda text: text,
        stopper: Stopper | None = None,
    ) -> None:
        self._secret_values = secret_values
        self._stopper = stopper or Stopper()
        # Daemon threads: a build or teardown stuck for good, once abandoned, must not keep
        # the process from exiting.
        self._threads = DaemonThreads(4, "rivulet-build")
        self._redact = redact
        self._stats = stats
        self._shared: dict[str, Any] = {}
        self._handles: dict[str, Any] = {}
        self._generation: dict[str, int] = {}
        self._failed: dict[str, ResourceError] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._local = threading.local()
        self._mutex = threading.Lock()  # guards stats and teardowns touched from threads
        self._teardowns: list[tuple[str, Any]] = []
        self._streak: dict[str, int] = {}  # connection errors in a row, per provider
        self._given: set[str] = set()  # resources handed in by `provide`, not built
        self._abandoned: list[tuple[str, asyncio.Future]] = []  # builds a stop gave up on

    async def acquire(self, provider: ResourceProvider) -> None:
        """Make sure the provider's resource can be had; build a shared one now if needed."""
        if provider.name in self._failed:
            raise self._failed[provider.name]
        self._generation.setdefault(provider.name, 0)
        if provider.name in self._given:
            return
        if provider.thread_safety != "per_thread" and provider.name not in self._shared:
            await self._build_shared(provider)

    def provide(self, provider: ResourceProvider, value: Any) -> None:
        """Use `value` as the provider's resource instead of building one (a fake in a unit
        test); it is never torn down, and a repair keeps it."""
        self._shared[provider.name] = value
        self._given.add(provider.name)
        self._generation.setdefault(provider.name, 0)

    def get(self, provider: ResourceProvider) -> Any:
        """The resource for this call: the shared instance, or this thread's own."""
        if provider.thread_safety != "per_thread" or provider.name in self._given:
            return self._shared[provider.name]
        mine = getattr(self._local, provider.name, None)
        generation = self._generation[provider.name]
        if mine is None or mine[0] != generation:
            # A replaced per-thread instance is torn down with the others at close().
            value, handle = self._build_in_thread(provider, rebuild=mine is not None)
            mine = (generation, value, handle)
            setattr(self._local, provider.name, mine)
        return mine[1]

    def generation(self, provider: ResourceProvider) -> int:
        """How many times the provider's resource was replaced; a call notes it before it
        starts, so a failure repairs only the instance it saw."""
        return self._generation[provider.name]

    def is_broken_by(self, provider: ResourceProvider, exc: BaseException) -> bool:
        """Whether the provider declares `exc` as meaning its resource is broken."""
        broken_on = provider.broken_on
        if broken_on is None:
            return False
        return isinstance(exc, broken_on) if isinstance(broken_on, tuple) else broken_on(exc)

    async def report(
        self, provider: ResourceProvider, exc: BaseException | None, generation: int
    ) -> None:
        """Note how a call using the resource ended; repair the resource if that broke it.

        Broken means an error the provider's `broken_on` names, or else `broken_after`
        connection errors in a row.
        """
        if exc is None:
            self._streak[provider.name] = 0
            return
        if provider.broken_on is None and is_connection_error(exc):
            self._streak[provider.name] = self._streak.get(provider.name, 0) + 1
            broken = self._streak[provider.name] >= provider.broken_after
        else:
            broken = self.is_broken_by(provider, exc)
        if broken:
            self._streak[provider.name] = 0
            await self.repair(provider, generation)

    async def repair(self, provider: ResourceProvider, generation: int) -> None:
        """Replace a broken resource, unless a concurrent call already did since `generation`."""
        if provider.name in self._given:
            return
        lock = self._locks.setdefault(provider.name, asyncio.Lock())
        async with lock:
            if self._generation[provider.name] != generation:
                return
            if provider.thread_safety != "per_thread":
                # Build the new one before retiring the old, so calls in flight never find none.
                broken = self._handles[provider.name]
                await self._build_shared(provider, rebuild=True)
                await self._tear_down(provider.name, broken)
            # Per-thread instances: each thread replaces its own on its next call.
            self._generation[provider.name] += 1

    async def close(self) -> None:
        """Tear down every instance still alive, newest first; failures are logged."""
        if self._abandoned:  # builds a stop gave up on: those done by now are torn down too
            await asyncio.wait([build for _, build in self._abandoned], timeout=LATE_BUILD_SECONDS)
        for name, build in self._abandoned:
            if build.done() and not build.cancelled() and build.exception() is None:
                self._count_build(name, build.result()[1], rebuild=False)
        self._abandoned.clear()
        while self._teardowns:
            name, handle = self._teardowns.pop()
            await self._tear_down(name, handle, forget=False)
        self._shared.clear()
        self._handles.clear()
        self._threads.shutdown(wait=False)

    async def _build_shared(self, provider: ResourceProvider, rebuild: bool = False) -> None:
        try:
            async for attempt in AsyncRetrying(
                **tenacity_args(provider.init_retry), sleep=self._stopper.sleep
            ):
                with attempt:
                    value, handle = await self._start_in_time(provider)
        except RivuletError:
            raise
        except Exception as exc:
            raise self._give_up(provider, exc) from exc
        self._shared[provider.name] = value
        self._handles[provider.name] = handle
        self._count_build(provider.name, handle, rebuild)
        _warn_of_own_retries(provider, value)

    async def _on_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)

    async def _start_in_time(self, provider: ResourceProvider) -> tuple[Any, Any]:
        """One build, within the provider's init_timeout; a stop ends the wait for it. A
        build the wait gave up on is torn down if it finishes by `close()`."""
        build = asyncio.ensure_future(
            _start_async(provider, self._context(provider), self._threads)
        )
        try:
            async with self._stopper.waiting(), asyncio.timeout(provider.init_timeout):
                return await asyncio.shield(build)
        except TimeoutError:
            self._abandon(provider.name, build)
            error = ResourceError(
                f"Resource provider '{provider.name}' did not finish building its resource "
                f"within its init_timeout of {provider.init_timeout:g} s; raise init_timeout "
                f"if it is just slow, or find what it waits on.",
                provider=provider.name,
            )
            self._failed[provider.name] = error
            raise error from None
        except BaseException:  # stopped (or cancelled) while the build went on
            self._abandon(provider.name, build)
            raise

    def _abandon(self, name: str, build: asyncio.Future) -> None:
        # Even a build already done: a stop can wake the wait in the loop step that finished
        # it, and that resource is in no other list to be torn down.
        self._abandoned.append((name, build))

    def _build_in_thread(self, provider: ResourceProvider, rebuild: bool) -> tuple[Any, Any]:
        try:
            for attempt in Retrying(**tenacity_args(provider.init_retry)):
                with attempt:
                    value, handle = _start(provider, self._context(provider))
        except Exception as exc:
            raise self._give_up(provider, exc) from exc
        self._count_build(provider.name, handle, rebuild)
        return value, handle

    def _give_up(self, provider: ResourceProvider, exc: Exception) -> ResourceError:
        error = ResourceError(
            f"Resource provider '{provider.name}' failed to build its resource after "
            f"{provider.init_retry.max_attempts} attempt(s): {type(exc).__name__}: {one_line(exc)}",
            provider=provider.name,
        )
        self._failed[provider.name] = error
        return error

    def _context(self, provider: ResourceProvider) -> tuple[Any, ...]:
        owner = f"Resource provider '{provider.name}'"
        secrets = Secrets(owner, provider.secrets, self._secret_values)
        return (ProviderContext(secrets),) if provider.takes_context else ()

    def _count_build(self, name: str, handle: Any, rebuild: bool) -> None:
        with self._mutex:
            self._stats.builds[name] += 1
            self._stats.rebuilds[name] += rebuild
            self._teardowns.append((name, handle))

    async def _tear_down(self, name: str, handle: Any, forget: bool = True) -> None:
        if forget:
            with self._mutex:
                self._teardowns.remove((name, handle))
        try:
            async with asyncio.timeout(TEARDOWN_SECONDS):
                if inspect.isgenerator(handle):
                    await self._on_thread(next, handle, None)
                elif inspect.isasyncgen(handle):
                    await anext(handle, None)
                elif hasattr(handle, "aclose"):
                    await handle.aclose()
                elif hasattr(handle, "close"):
                    await self._on_thread(handle.close)
        except TimeoutError:
            log.warning(
                "Teardown of resource provider '%s' did not finish within %g s; abandoned.",
                name,
                TEARDOWN_SECONDS,
            )
        except Exception as exc:
            log.warning(
                "Teardown of resource provider '%s' failed: %s", name, self._redact(str(exc))
            )
        with self._mutex:
            self._stats.teardowns[name] += 1


def _warn_of_own_retries(provider: ResourceProvider, value: Any) -> None:
    """The openai SDK retries by itself (max_retries=2): say so, since attempts multiply."""
    retries = getattr(value, "max_retries", 0)
    if type(value).__module__.startswith("openai") and isinstance(retries, int) and retries > 0:
        log.warning(
            "Resource provider '%s' returned an openai client with max_retries=%d, so each of "
            "Rivulet's attempts may make %d requests; pass max_retries=0 to the client to let "
            "Rivulet's RetryPolicy count every request.",
            provider.name,
            retries,
            retries + 1,
        )


def _start(provider: ResourceProvider, args: tuple[Any, ...]) -> tuple[Any, Any]:
    """Call a sync provider: (the resource, what to tear down)."""
    made = provider.function(*args)
    if inspect.isgenerator(made):
        try:
            return next(made), made
        except StopIteration:
            raise ResourceError(
                f"Resource provider '{provider.name}' is a generator that returned without "
                f"yielding a resource.",
                provider=provider.name,
            ) from None
    return made, made


async def _start_async(
    provider: ResourceProvider, args: tuple[Any, ...], threads: Executor
) -> tuple[Any, Any]:
    """Call any provider, sync or async, plain or generator: (the resource, its teardown).

    Sync code runs on a thread, so a slow connect does not stall calls already in flight.
    """
    if inspect.isasyncgenfunction(provider.function):
        made = provider.function(*args)
        return await anext(made), made
    if inspect.iscoroutinefunction(provider.function):
        made = await provider.function(*args)
        return made, made
    return await asyncio.get_running_loop().run_in_executor(threads, _start, provider, args)
