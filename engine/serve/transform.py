"""One realtime view answering one request: inputs checked, the call made, features checked.

`Runtime` is what a server process (or one `run_transformation`) holds: the resource pool,
the limits, the threads and a `ViewCall` per view, all on one event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.define.feature_views import RealtimeFeatureView
from engine.define.fields import Field
from engine.define.secrets import Secret
from engine.define.sources import RequestSource
from engine.errors import (
    BadRequest,
    OutputError,
    RivuletError,
    TransformError,
    ViewTimeout,
    one_line,
)
from engine.plan.rates import worker_rates
from engine.plan.secrets import literal_secrets, redactor, resolve_secrets
from engine.runtime.caller import Caller, CallSpec, FailedCall, spread
from engine.runtime.context import CallContext, Resources, Secrets, run_sync
from engine.runtime.limits import Limits
from engine.runtime.resources import ResourcePool
from engine.runtime.shared_limits import SharedBuckets
from engine.runtime.stats import CallStats
from engine.runtime.stopping import Stopper
from engine.runtime.threads import DaemonThreads
from engine.serve.values import describe, feature_value, request_value

if TYPE_CHECKING:
    from engine.serve.cache import AnswerCache


@dataclass(frozen=True, kw_only=True)
class RealtimeContext(CallContext):
    """The `context` of a realtime transform: resources, secrets and the request's time."""

    request_timestamp: datetime


class ViewCall:
    """One realtime view in a runtime: its caller, its cache and its call statistics."""

    def __init__(
        self,
        view: RealtimeFeatureView,
        pool: ResourcePool,
        limits: Limits,
        threads: DaemonThreads,
        stopper: Stopper,
        secret_values: Mapping[Secret, str],
    ) -> None:
        self.view = view
        self.stats = CallStats()
        # A sync view without resources or a declared timeout computes from its inputs
        # alone: a thread hop would cost more than the call, so it runs where it is asked
        # for. With a timeout it runs on a thread, to be cut off when late.
        inline = not (
            view.resource_providers or view.timeout or inspect.iscoroutinefunction(view.function)
        )
        spec = replace(CallSpec.of(view), function=spread(view.function), inline=inline)
        self.caller = Caller(spec, pool, limits, self.stats, threads, stopper)
        self.cache: AnswerCache | None = None
        if view.cache is not None:
            from engine.serve.cache import AnswerCache  # cachetools: the serve extra

            self.cache = AnswerCache(view.cache)
        owner = f"Feature view '{view.name}'"
        self._resources = Resources(owner, dict(view.resource_providers), pool)
        self._secrets = Secrets(owner, view.secrets, secret_values)
        self._limits = limits

    async def answer(
        self, fields: list[dict[str, Any]], at: datetime | None = None
    ) -> dict[str, Any]:
        """The view's features for one request's fields (per source, as `request_fields()`
        checked them) made at `at` (default now), within the view's timeout; a cached
        answer when there is one."""
        if self.cache is None:
            return await self._compute(fields, at)
        return await self.cache.get(fields, lambda: self._compute(fields, at))

    @property
    def runs_here(self) -> bool:
        """Whether `answer_here` may answer: the view runs inline, keeps no cache and
        declares no retry policy (`answer_here` makes one attempt)."""
        return self.caller.spec.inline and self.cache is None and self.view.retry is None

    def answer_here(
        self, fields: list[dict[str, Any]], at: datetime | None = None
    ) -> dict[str, Any]:
        """`answer()` computed on the calling thread, for a view that `runs_here`: it has no
        resource, limit or cache to wait for, and a hop to the server's loop would cost
        more than the call."""
        context = self._context(at, loop=None)
        kwargs = {"context": context} if self.caller.spec.takes_context else {}
        began = time.perf_counter()
        try:
            returned = self.caller.spec.function(self._inputs(fields), **kwargs)
        except Exception as exc:
            self.stats.failed_calls += 1
            raise _failure(self.view, FailedCall(exc, 1)) from exc
        finally:
            self.stats.calls += 1
            self.stats.record_latency(time.perf_counter() - began)
        return self._one_row(returned)

    async def _compute(self, fields: list[dict[str, Any]], at: datetime | None) -> dict[str, Any]:
        view = self.view
        context = self._context(at, loop=asyncio.get_running_loop())
        try:
            async with asyncio.timeout(view.timeout):
                returned, _ = await self.caller(self._inputs(fields), context)
        except TimeoutError:
            raise ViewTimeout(
                f"Feature view '{view.name}' did not answer within its timeout of "
                f"{view.timeout:g} s.",
                view=view.name,
            ) from None
        except FailedCall as failed:
            raise _failure(view, failed) from failed.error
        return self._one_row(returned)

    def _inputs(self, fields: list[dict[str, Any]]) -> tuple[Any, ...]:
        """The transform's inputs: a copy of each source's fields it may change."""
        if self.view.mode == "pandas":
            import pandas as pd

            return tuple(pd.DataFrame([one]) for one in fields)
        return tuple(dict(one) for one in fields)

    def _context(
        self, at: datetime | None, loop: asyncio.AbstractEventLoop | None
    ) -> RealtimeContext:
        return RealtimeContext(
            resources=self._resources,
            secrets=self._secrets,
            request_timestamp=at or datetime.now(UTC),
            _limits=self._limits,
            _loop=loop,
        )

    def _one_row(self, returned: Any) -> dict[str, Any]:
        rows = checked_features(self.view, returned)
        if len(rows) != 1:
            raise _output_error(self.view, f"returned {len(rows)} rows for one request, not 1")
        return rows[0]


def request_fields(
    view: RealtimeFeatureView, fields_by_source: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each source's fields, checked against its schema (a batch view's features, read
    from the online store or given by a test, pass as they are). Raises BadRequest naming a
    missing or mistyped field and the type it needs."""
    made = []
    for source, given in zip(view.sources, fields_by_source, strict=True):
        if not isinstance(source, RequestSource):
            made.append(dict(given))
            continue
        made.append({field.name: checked_field(view.name, field, given) for field in source.schema})
    return made


def checked_field(view: str, field: Field, given: Mapping[str, Any], key: bool = False) -> Any:
    """The request's value of `field`, typed: a request field (in requestContextMap) or,
    with `key`, a join key (in joinKeyMap, never null). Raises BadRequest naming a missing
    or mistyped one and the type it needs."""
    where = "joinKeyMap" if key else "requestContextMap"
    what = "join key" if key else "field"
    if field.name not in given:
        raise BadRequest(
            f"The request lacks {what} '{field.name}' ({field.dtype!r}) that feature view "
            f"'{view}' needs; add it to {where}.",
            view=view,
            feature=field.name,
        )
    value, fits = request_value(field.dtype, given[field.name])
    if not fits or (key and value is None):
        raise BadRequest(
            f"The request's {what} '{field.name}' is {describe(given[field.name])} "
            f"{one_line(repr(given[field.name]))[:80]}, but feature view '{view}' needs "
            f"{field.dtype!r}.",
            view=view,
            feature=field.name,
        )
    return value


def checked_features(view: RealtimeFeatureView, returned: Any) -> list[dict[str, Any]]:
    """The transform's answer as rows of declared features (python mode gives one), each
    value checked against its type. Raises OutputError naming view, feature and types."""
    if view.mode == "pandas":
        import pandas as pd

        if not isinstance(returned, pd.DataFrame):
            raise _output_error(view, f"returned {type(returned).__name__}, not a DataFrame")
        rows = returned.to_dict("records")
    elif isinstance(returned, Mapping):
        rows = [returned]
    else:
        raise _output_error(view, f"returned {type(returned).__name__}, not a dict of features")
    declared = {feature.name: feature.dtype for feature in view.features}
    checked = []
    for row in rows:
        extra = sorted(set(row) - declared.keys())
        if extra:
            raise _output_error(
                view, f"returned feature '{extra[0]}', which it does not declare", extra[0]
            )
        features = {}
        for name, dtype in declared.items():
            if name not in row:
                raise _output_error(view, f"did not return feature '{name}' ({dtype!r})", name)
            value, fits = feature_value(dtype, row[name])
            if not fits:
                raise _output_error(
                    view,
                    f"returned feature '{name}' as {describe(row[name])}, but declares {dtype!r}",
                    name,
                )
            features[name] = value
        checked.append(features)
    return checked


class Runtime:
    """Everything the views of one server process share: resources, limits, threads.

    `start()` builds every resource (init retried); `close()` stops waits and tears every
    resource down once. All of it runs on one event loop.
    """

    def __init__(
        self,
        views: Sequence[RealtimeFeatureView],
        secret_values: Mapping[Secret, str],
        rates: Mapping[str, tuple[float, float]],
        given: Mapping[str, Any] | None = None,
        limiter: str | None = None,
    ) -> None:
        self.stats = CallStats()  # resource builds, rebuilds, teardowns; limiter waits
        self.redact = redactor([*secret_values.values(), *literal_secrets(views)])
        self.stopper = Stopper()
        self.pool = ResourcePool(secret_values, self.stats, self.redact, self.stopper)
        self._shared = SharedBuckets(limiter, rates, self.stopper) if limiter else None
        self.limits = Limits(rates, self.stats, self.stopper, self._shared)
        most = max((view.concurrency for view in views), default=1)
        self.threads = DaemonThreads(most, "rivulet-serve")
        self.calls = {
            view.name: ViewCall(
                view, self.pool, self.limits, self.threads, self.stopper, secret_values
            )
            for view in views
        }
        self._given = dict(given or {})

    @property
    def providers(self) -> dict[str, Any]:
        return {p.name: p for call in self.calls.values() for _, p in call.view.resource_providers}

    async def start(self) -> None:
        """Build every resource the views use (a given one is used as it is)."""
        for call in self.calls.values():
            for key, provider in call.view.resource_providers:
                if key in self._given:
                    self.pool.provide(provider, self._given[key])
        for provider in self.providers.values():
            await self.pool.acquire(provider)

    async def close(self) -> None:
        self.stopper.stop()
        await self.pool.close()
        if self._shared is not None:
            await self._shared.close()
        self.threads.shutdown(wait=False)


def _failure(view: RealtimeFeatureView, failed: FailedCall) -> RivuletError:
    error = failed.error
    if isinstance(error, RivuletError):
        return error
    return TransformError(
        f"Feature view '{view.name}' failed after {failed.attempts} attempt(s): "
        f"{type(error).__name__}: {one_line(error)}",
        view=view.name,
    )


def _output_error(view: RealtimeFeatureView, what: str, feature: str | None = None) -> OutputError:
    return OutputError(f"Feature view '{view.name}' {what}.", view=view.name, feature=feature)


def run_transformation(
    view: RealtimeFeatureView, input_data: Mapping[str, Any], resources: Mapping[str, Any] | None
) -> Any:
    """`view.run_transformation(...)`: the view's features for `input_data` (a dict in
    python mode, a DataFrame in pandas mode), with `resources` given by name and the rest
    built from their providers, then torn down."""
    given = dict(resources or {})
    declared = dict(view.resource_providers)
    unknown = sorted(set(given) - declared.keys())
    if unknown:
        raise BadRequest(
            f"Feature view '{view.name}' declares no resource '{unknown[0]}'; it declares "
            f"{', '.join(declared) or 'none'}.",
            view=view.name,
        )
    missing = [name for name in view.source_names if name not in input_data]
    if missing:
        raise BadRequest(
            f"Feature view '{view.name}' needs input_data['{missing[0]}'] (its transform's "
            f"parameter for that source); it got {', '.join(map(repr, input_data)) or 'none'}.",
            view=view.name,
        )
    by_source = [_fields(input_data[name]) for name in view.source_names]
    secret_values = resolve_secrets([view]) if set(declared) - set(given) or view.secrets else {}

    async def once() -> dict[str, Any]:
        runtime = Runtime([view], secret_values, {}, given)
        try:
            await runtime.start()
            return await runtime.calls[view.name].answer(request_fields(view, by_source))
        finally:
            await runtime.close()

    features = run_sync(once())
    if view.mode == "pandas":
        import pandas as pd

        return pd.DataFrame([features])
    return features


def answer_rows(
    view: RealtimeFeatureView,
    requests: Sequence[Sequence[Mapping[str, Any]]],
    times: Sequence[datetime],
    secrets_file: str | Path | None = None,
) -> list[dict[str, Any] | None]:
    """The view's features for many requests (each its fields by source, made at its time),
    as serving computes one: its resources built once, its concurrency, rate limits and
    retries. A request that fails raises its error, or gives None when the view's
    `on_error` is "null"."""
    if not requests:
        return []
    secret_values = resolve_secrets([view], secrets_file)

    async def all_rows() -> list[dict[str, Any] | None]:
        runtime = Runtime([view], secret_values, worker_rates([view], {}, 1))
        call, gate = runtime.calls[view.name], asyncio.Semaphore(view.concurrency)

        async def one(fields: Sequence[Mapping[str, Any]], at: datetime) -> dict[str, Any] | None:
            checked = request_fields(view, fields)  # bad input is raised, whatever on_error says
            async with gate:
                try:
                    return await call.answer(checked, at)
                except RivuletError:
                    if view.on_error != "null":
                        raise
                    return None

        try:
            await runtime.start()
            return await asyncio.gather(*map(one, requests, times))
        finally:
            await runtime.close()

    return run_sync(all_rows())


def _fields(given: Any) -> Mapping[str, Any]:
    """A source's fields from a dict, or from the first row of a one-row DataFrame."""
    if hasattr(given, "to_dict") and hasattr(given, "columns"):
        rows = given.to_dict("records")
        return rows[0] if rows else {}
    return given
