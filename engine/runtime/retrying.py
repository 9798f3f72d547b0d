"""RetryPolicy handed to tenacity: which errors retry, and how long to wait between tries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from engine.define.policies import RetryPolicy
from engine.errors import RivuletError
from engine.runtime.transient import retry_after, transient_cause


class wait_backoff_or_retry_after:  # named like tenacity's own wait strategies
    """Exponential backoff with jitter, or the server's Retry-After when that is longer."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._backoff = wait_exponential_jitter(
            multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.jitter
        )
        self._ceiling = max(policy.max_backoff, 60.0)

    def __call__(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        error = state.outcome.exception() if state.outcome else None
        asked = retry_after(error) if error is not None else None
        return min(max(backoff, asked or 0.0), self._ceiling)


def retry_predicate(
    policy: RetryPolicy, also: Callable[[BaseException], bool]
) -> Callable[[BaseException], bool]:
    """The policy's `retry_on` (types or predicate), else transient errors; or `also`; never
    a RivuletError."""
    retry_on = policy.retry_on
    if retry_on is None:
        base = lambda exc: transient_cause(exc) is not None  # noqa: E731
    elif isinstance(retry_on, tuple):
        base = lambda exc: isinstance(exc, retry_on)  # noqa: E731
    else:
        base = retry_on
    # Rivulet's own errors (an undeclared secret, a provider that cannot be built, a stop)
    # are final: trying again gives the same answer.
    return lambda exc: not isinstance(exc, RivuletError) and (base(exc) or also(exc))


def tenacity_args(
    policy: RetryPolicy, also: Callable[[BaseException], bool] = lambda exc: False
) -> dict[str, Any]:
    """Keyword arguments for tenacity's Retrying/AsyncRetrying that enact `policy`."""
    return {
        "stop": stop_after_attempt(policy.max_attempts),
        "wait": wait_backoff_or_retry_after(policy),
        "retry": retry_if_exception(retry_predicate(policy, also)),
        "reraise": True,
    }
