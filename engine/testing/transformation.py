"""A batch view run in memory on frames a unit test gives: Tecton's `run_transformation`,
`test_run` and `get_features_for_events(..., mock_inputs=...)`.

The frames stand in for the view's sources: each is cut to its source's range for the
interval, as a run reads it, and the transform is called as a worker calls it (micro-batches,
retries, error policy, output checks), with resources built from their providers or given
as fakes. Nothing is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engine.arrow import as_arrow_table
from engine.define.feature_views import BatchFeatureView
from engine.define.schedule import as_utc, boundary, interval_index
from engine.define.sources import BatchSource, FilteredSource, PythonConfig
from engine.errors import SettingsError
from engine.plan.intervals import tile
from engine.plan.secrets import literal_secrets, redactor, resolve_secrets
from engine.read.sources import read_table, read_window
from engine.retrieve.historical import committed_rows, join_features
from engine.runtime.caller import Caller, CallSpec, spread
from engine.runtime.context import Resources, Secrets, run_sync
from engine.runtime.limits import Limits
from engine.runtime.resources import ResourcePool
from engine.runtime.stats import CallStats
from engine.runtime.stopping import Stopper
from engine.runtime.threads import DaemonThreads
from engine.store.dead_letters import DeadLetters
from engine.store.tiles import stored_schema, tile_rows
from engine.work.modes import BatchContext, run_transform


@dataclass(frozen=True)
class Result:
    """A table a unit test reads as it likes: `.to_pandas()`, `.to_polars()`, `.to_arrow()`."""

    table: pa.Table

    def to_arrow(self) -> pa.Table:
        return self.table

    def to_pandas(self) -> Any:
        return self.table.to_pandas()

    def to_polars(self) -> Any:
        import polars as pl

        return pl.from_arrow(self.table)


def run_transformation(
    view: BatchFeatureView,
    start_time: datetime,
    end_time: datetime,
    mock_inputs: Mapping[str, Any],
    resources: Mapping[str, Any] | None = None,
) -> Result:
    """The transform's rows for [start_time, end_time) of the mock inputs (see the module)."""
    start, end = as_utc(start_time), as_utc(end_time)
    if start >= end:
        raise SettingsError(
            f"Feature view '{view.name}': start_time {start:%Y-%m-%d %H:%M} is not before "
            f"end_time {end:%Y-%m-%d %H:%M}."
        )
    mocked, _ = _mocked(view, mock_inputs)
    [rows] = run_sync(_run(mocked, [(start, end)], resources or {}))
    return Result(rows)


def features_for_events(
    view: BatchFeatureView,
    events: Any,
    mock_inputs: Mapping[str, Any] | None,
    timestamp_field: str | None,
    output: str,
    resources: Mapping[str, Any] | None,
) -> Result:
    """The events with the view's features as of each one's time, as `<view>__<feature>`:
    computed from `mock_inputs` over every interval the events need, or read from the
    offline store at `output` without them."""
    if mock_inputs is None:
        rows_of = committed_rows(output)
        return Result(join_features(events, [view], rows_of, timestamp_field, prefixed=True))
    mocked, first = _mocked(view, mock_inputs)

    def computed(target: BatchFeatureView, start: datetime | None, end: datetime) -> pa.Table:
        """Every interval from `start` (or the first source's first row) up to the one
        holding `end`."""
        earliest = max(start or view.feature_start_time, _earliest(view, first))
        last = _end(view, end)
        if earliest >= last:  # every event is before the first row: nothing to compute
            return stored_schema(view).empty_table()
        intervals = tile(view.feature_start_time, view.batch_schedule, earliest, last)
        tables = run_sync(_run(mocked, intervals, resources or {}))
        rows = pa.concat_tables(tables) if tables else view.row_schema().empty_table()
        return tile_rows(view, rows) if view.aggregates else rows

    return Result(join_features(events, [view], computed, timestamp_field, prefixed=True))


def _mocked(
    view: BatchFeatureView, mock_inputs: Mapping[str, Any]
) -> tuple[BatchFeatureView, pa.Table]:
    """The view with each source replaced by its mock frame (by parameter or source name),
    read over the same range; and the first source's frame."""
    names = {*view.parameters, *(source.name for source in view.sources)}
    unknown = sorted(set(mock_inputs) - names)
    if unknown:
        raise SettingsError(
            f"Feature view '{view.name}' has no source or parameter '{unknown[0]}'; its "
            f"transform's parameters are {', '.join(view.parameters)}."
        )
    sources, tables = [], []
    for parameter, source in zip(view.parameters, view.sources, strict=True):
        given = mock_inputs.get(parameter, mock_inputs.get(source.name))
        if given is None:
            raise SettingsError(
                f"Feature view '{view.name}' needs mock_inputs['{parameter}'], a frame for its "
                f"source '{source.name}'."
            )
        table = as_arrow_table(given)
        if table is None:
            raise SettingsError(
                f"Feature view '{view.name}': mock_inputs['{parameter}'] is a "
                f"{type(given).__name__}; give a pandas or Polars DataFrame or an Arrow table."
            )
        tables.append(table)
        config = PythonConfig(
            loader=_returning(table),
            timestamp_field=source.batch_config.timestamp_field,
        )
        mock = BatchSource(source.name, config)
        sources.append(FilteredSource(mock, start=source.start, end=source.end))
    return replace(view, sources=tuple(sources)), tables[0]


def _returning(table: pa.Table) -> Any:
    def loader(start_time: datetime | None, end_time: datetime | None) -> pa.Table:
        return table

    return loader


def _earliest(view: BatchFeatureView, first: pa.Table) -> datetime:
    """The start of the earliest interval whose range of the first source holds one of its
    rows (the view's start when that range is unbounded, or the frame has no times)."""
    source, field = view.sources[0], view.window_field_of(view.sources[0])
    if source.start.anchor == "past" or field not in first.column_names:
        return view.feature_start_time
    if not pa.types.is_timestamp(first[field].type):
        return view.feature_start_time
    earliest = pc.min(first[field].cast(pa.timestamp("us", "UTC"), safe=False)).as_py()
    if earliest is None:
        return view.feature_start_time
    # A range starting `offset` before the interval's start (or end) reaches back that far.
    reach = -source.start.offset if source.start.offset < timedelta(0) else timedelta(0)
    if source.start.anchor == "end" and isinstance(view.batch_schedule, timedelta):
        reach += view.batch_schedule
    return max(view.feature_start_time, earliest - reach)


def _end(view: BatchFeatureView, moment: datetime) -> datetime:
    """The end of the view's interval holding `moment`."""
    origin, schedule = view.feature_start_time, view.batch_schedule
    return boundary(origin, schedule, interval_index(origin, schedule, moment) + 1)


async def _run(
    view: BatchFeatureView,
    intervals: Sequence[tuple[datetime, datetime]],
    given: Mapping[str, Any],
) -> list[pa.Table]:
    """The transform's rows of each interval, in order, with one set of resources."""
    declared = dict(view.resource_providers)
    unknown = sorted(set(given) - declared.keys())
    if unknown:
        raise SettingsError(
            f"Feature view '{view.name}' declares no resource '{unknown[0]}'; it declares "
            f"{', '.join(declared) or 'none'}."
        )
    built = set(declared) - set(given)
    secret_values = resolve_secrets([view]) if built or view.secrets else {}
    redact = redactor([*secret_values.values(), *literal_secrets([view])])
    stats, stopper = CallStats(), Stopper()
    pool = ResourcePool(secret_values, stats, redact, stopper)
    threads = DaemonThreads(view.concurrency, "rivulet-test")
    spec = CallSpec.of(view)
    if len(view.sources) > 1:
        spec = replace(spec, function=spread(view.function))
    limits = Limits({}, stats, stopper)
    caller = Caller(spec, pool, limits, stats, threads, stopper)
    try:
        for key, provider in view.resource_providers:
            if key in given:
                pool.provide(provider, given[key])
            await pool.acquire(provider)
        return [
            await _interval(view, start, end, pool, limits, caller, secret_values, redact)
            for start, end in intervals
        ]
    finally:
        stopper.stop()
        await pool.close()
        threads.shutdown(wait=False)


async def _interval(
    view: BatchFeatureView,
    start: datetime,
    end: datetime,
    pool: ResourcePool,
    limits: Limits,
    caller: Caller,
    secret_values: Mapping[Any, str],
    redact: Any,
) -> pa.Table:
    context = BatchContext(
        resources=Resources(f"Feature view '{view.name}'", dict(view.resource_providers), pool),
        secrets=Secrets(f"Feature view '{view.name}'", view.secrets, secret_values),
        start_time=start,
        end_time=end,
        batch_schedule=view.batch_schedule,
        _limits=limits,
        _loop=asyncio.get_running_loop(),
    )
    first, *rest = view.sources
    others = {
        parameter: read_table(view, source, start, end)
        for parameter, source in zip(view.parameters[1:], rest, strict=True)
    }
    batches = read_window(view, first, start, end)
    dead_letters = DeadLetters(view, start, end, redact)
    outputs = run_transform(view, batches, context, caller, dead_letters, lambda: False, others)
    async with aclosing(outputs) as tables:
        found = [table async for table in tables]
    return pa.concat_tables(found) if found else view.row_schema().empty_table()
