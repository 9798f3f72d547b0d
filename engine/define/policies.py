"""Call policies declared beside a resource or feature view: rate limit and retries."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from engine.errors import DefinitionError

RetryOn = tuple[type[BaseException], ...] | Callable[[BaseException], bool]
SLOWEST_RATE = 0.001  # requests per second: one call per ~17 minutes
FASTEST_RATE = 1_000_000.0


def rate_problem(rate: object) -> str | None:
    """Why `rate` is no usable requests-per-second limit, or None when it is one."""
    if not isinstance(rate, int | float) or isinstance(rate, bool):
        return f"must be a number of requests per second, not {rate!r}"
    if not SLOWEST_RATE <= rate <= FASTEST_RATE:  # also refuses nan and inf
        return (
            f"must lie between {SLOWEST_RATE} and {FASTEST_RATE:,.0f} requests per second, "
            f"not {rate!r} (leave the limit out for none)"
        )
    return None


def timeout_seconds(value: float | timedelta | None, where: str) -> float | None:
    """A timeout given as seconds or a timedelta, in seconds; DefinitionError if not positive."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise DefinitionError(f"{where} must be positive seconds or a timedelta, not {value!r}.")
    if math.isinf(seconds):
        raise DefinitionError(f"{where} must be finite; a call that never ends stalls its run.")
    return float(seconds)


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `requests_per_second` on average, at most `burst` at once.

    One transform call takes one token of each rate-limited resource its feature view uses
    (a row in python mode, a micro-batch in frame modes); `context.spend(name, n)` takes
    more when a call makes several requests. With several workers the limit is for the run.

    Example: `@resource_provider(rate_limit=RateLimit(requests_per_second=100, burst=10))`.
    """

    requests_per_second: float
    burst: int = 1

    def __post_init__(self) -> None:
        problem = rate_problem(self.requests_per_second)
        if problem:
            raise DefinitionError(f"RateLimit: requests_per_second {problem}.")
        if not isinstance(self.burst, int) or self.burst < 1:
            raise DefinitionError(f"RateLimit needs burst >= 1, not burst={self.burst!r}.")


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed call is retried: exponential backoff with jitter, at most `max_attempts`.

    `retry_on` is a tuple of exception types or a predicate; by default transient errors
    are retried: timeouts, connection errors, and HTTP 408/409/429/5xx answers from httpx,
    requests, urllib and the openai SDK. A `Retry-After` or `retry-after-ms` header sets the
    wait when it is longer than the backoff.

    Example: `RetryPolicy(max_attempts=8, initial_backoff=0.2, max_backoff=30)`.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 10.0
    jitter: float = 0.1
    retry_on: RetryOn | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_backoff < 0 or self.max_backoff < 0:
            raise DefinitionError(
                f"RetryPolicy needs max_attempts >= 1 and non-negative backoffs, not "
                f"max_attempts={self.max_attempts!r}, initial_backoff={self.initial_backoff!r}, "
                f"max_backoff={self.max_backoff!r}."
            )
