"""`@resource_provider`: declares how a worker builds a shared resource such as an API client."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, overload

from engine.define.policies import RateLimit, RetryOn, RetryPolicy, timeout_seconds
from engine.define.secrets import Secret
from engine.errors import DefinitionError

SecretSpec = Secret | str
THREAD_SAFETY = ("shared", "per_thread", "serialize")
INIT_RETRY = RetryPolicy(
    max_attempts=4, initial_backoff=0.2, max_backoff=5.0, retry_on=(Exception,)
)
DEFAULT_INIT_TIMEOUT = 120.0  # seconds for one build: a model load or a cold pool is slow


@dataclass(frozen=True, eq=False)
class ResourceProvider:
    """A declared resource provider. Only a worker calls `function`, once per worker.

    `function` takes nothing or `context` (with `context.secrets`) and returns the resource,
    or yields it (code after `yield` is the teardown). A returned object with `close()` or
    `aclose()` is closed when the worker shuts down.

    Calls that use the resource obey `rate_limit`, at most `max_concurrency` at once, and
    are retried by `retry`, each attempt bounded by `timeout` seconds. Building it is
    retried by `init_retry`; a build past `init_timeout` fails at once. An error matching
    `broken_on` (by default `broken_after` connection errors in a row) means the resource is
    broken: it is torn down, rebuilt, and the call retried. `thread_safety` is "shared" (one
    instance for all threads), "per_thread" (one per worker thread) or "serialize" (one
    instance, one call at a time).
    """

    function: Callable[..., Any]
    name: str
    secrets: tuple[tuple[str, SecretSpec], ...] = ()
    description: str | None = None
    owner: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    rate_limit: RateLimit | None = None
    max_concurrency: int | None = None
    retry: RetryPolicy | None = None
    init_retry: RetryPolicy = INIT_RETRY
    broken_on: RetryOn | None = None
    broken_after: int = 3
    thread_safety: str = "shared"
    timeout: float | None = None
    init_timeout: float = DEFAULT_INIT_TIMEOUT

    @property
    def takes_context(self) -> bool:
        return len(inspect.signature(self.function).parameters) == 1


def _check_provider(
    function: Callable[..., Any],
    name: str,
    thread_safety: str,
    max_concurrency: int | None,
    policies: dict[str, Any],
) -> None:
    if not callable(function):
        raise DefinitionError(f"@resource_provider '{name}' must decorate a function.")
    params = list(inspect.signature(function).parameters.values())
    if len(params) > 1 or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise DefinitionError(
            f"Resource provider '{name}' must take no parameters or just `context`, "
            f"but takes ({', '.join(p.name for p in params)})."
        )
    if thread_safety not in THREAD_SAFETY:
        raise DefinitionError(
            f"Resource provider '{name}' has thread_safety '{thread_safety}'; use one of "
            f"{', '.join(THREAD_SAFETY)}."
        )
    if thread_safety == "per_thread" and (
        inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
    ):
        raise DefinitionError(
            f"Resource provider '{name}' is async, so it cannot build one instance per thread; "
            f"use thread_safety='serialize' or a sync provider."
        )
    if max_concurrency is not None and (
        not isinstance(max_concurrency, int) or max_concurrency < 1
    ):
        raise DefinitionError(
            f"Resource provider '{name}': max_concurrency must be a positive integer, "
            f"not {max_concurrency!r}."
        )
    for setting, (value, kind) in policies.items():
        if value is not None and not isinstance(value, kind):
            raise DefinitionError(
                f"Resource provider '{name}': {setting} must be a {kind.__name__}(...), "
                f"not {type(value).__name__}."
            )


def check_secrets(
    owner: str, secrets: Mapping[str, SecretSpec] | None
) -> tuple[tuple[str, SecretSpec], ...]:
    """Validate a `secrets={"name": Secret(...) | "literal"}` mapping; return it as sorted pairs."""
    for key, spec in (secrets or {}).items():
        if not isinstance(spec, Secret | str):
            raise DefinitionError(
                f"{owner} declares secret '{key}' as {type(spec).__name__}; "
                f"use Secret(scope=..., key=...) or a string literal."
            )
    return tuple(sorted((secrets or {}).items()))


@overload
def resource_provider(function: Callable[..., Any], /) -> ResourceProvider: ...
@overload
def resource_provider(
    *,
    name: str | None = None,
    description: str | None = None,
    owner: str | None = None,
    tags: dict[str, str] | None = None,
    secrets: dict[str, SecretSpec] | None = None,
    rate_limit: RateLimit | None = None,
    max_concurrency: int | None = None,
    retry: RetryPolicy | None = None,
    init_retry: RetryPolicy = INIT_RETRY,
    broken_on: RetryOn | None = None,
    broken_after: int = 3,
    thread_safety: str = "shared",
    timeout: float | timedelta | None = None,
    init_timeout: float | timedelta = DEFAULT_INIT_TIMEOUT,
) -> Callable[[Callable[..., Any]], ResourceProvider]: ...


def resource_provider(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    owner: str | None = None,
    tags: dict[str, str] | None = None,
    secrets: dict[str, SecretSpec] | None = None,
    rate_limit: RateLimit | None = None,
    max_concurrency: int | None = None,
    retry: RetryPolicy | None = None,
    init_retry: RetryPolicy = INIT_RETRY,
    broken_on: RetryOn | None = None,
    broken_after: int = 3,
    thread_safety: str = "shared",
    timeout: float | timedelta | None = None,
    init_timeout: float | timedelta = DEFAULT_INIT_TIMEOUT,
) -> ResourceProvider | Callable[[Callable[..., Any]], ResourceProvider]:
    """Declare a resource provider; usable bare or with arguments.

    Example:
        @resource_provider(
            secrets={"key": Secret(scope="openai", key="api_key")},
            rate_limit=RateLimit(requests_per_second=50, burst=5),
        )
        def openai_client(context):
            from openai import OpenAI
            return OpenAI(api_key=context.secrets["key"])
    """

    def declare(fn: Callable[..., Any]) -> ResourceProvider:
        provider_name = name or getattr(fn, "__name__", "resource_provider")
        _check_provider(
            fn,
            provider_name,
            thread_safety,
            max_concurrency,
            {
                "rate_limit": (rate_limit, RateLimit),
                "retry": (retry, RetryPolicy),
                "init_retry": (init_retry, RetryPolicy),
            },
        )
        return ResourceProvider(
            function=fn,
            name=provider_name,
            secrets=check_secrets(f"Resource provider '{provider_name}'", secrets),
            description=description,
            owner=owner,
            tags=tuple(sorted((tags or {}).items())),
            rate_limit=rate_limit,
            max_concurrency=max_concurrency,
            retry=retry,
            init_retry=init_retry,
            broken_on=broken_on,
            broken_after=broken_after,
            thread_safety=thread_safety,
            timeout=timeout_seconds(timeout, f"Resource provider '{provider_name}': timeout"),
            init_timeout=timeout_seconds(
                init_timeout, f"Resource provider '{provider_name}': init_timeout"
            ),
        )

    return declare(function) if function is not None else declare
