"""Running a transform over a stream of source batches, per mode, into output tables.

A call that fails for good follows the view's `on_error`: "fail" raises (the interval is
not committed), "skip" drops its rows, "null" keeps them with null features; skipped and
nulled rows are recorded in the interval's dead letters.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import pyarrow as pa

from engine.arrow import coalesced, to_rows
from engine.define.feature_views import WHOLE_FRAME_BYTES, BatchFeatureView
from engine.define.schedule import Schedule
from engine.errors import Interrupted, OutputError, RivuletError, TransformError, one_line
from engine.runtime.caller import Caller, FailedCall
from engine.runtime.context import CallContext
from engine.runtime.inflight import ordered_map
from engine.store.dead_letters import DeadLetters
from engine.work.conform import checked_features, describe_row, frame_to_table, rows_to_table

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class BatchContext(CallContext):
    """The `context` of a batch transform: resources, secrets and the interval it computes."""

    start_time: datetime
    end_time: datetime
    batch_schedule: Schedule


async def run_transform(
    view: BatchFeatureView,
    batches: Iterable[pa.RecordBatch],
    context: BatchContext,
    caller: Caller,
    dead_letters: DeadLetters,
    stopped: Callable[[], bool],
    others: Mapping[str, pa.Table] | None = None,
) -> AsyncIterator[pa.Table]:
    """Yield one output table per batch of the first source, in source order; `others`
    are the other sources' tables by parameter, handed whole to every call (frame modes)."""
    if view.mode == "python":
        runner = _run_python(view, batches, context, caller, dead_letters, stopped)
    else:
        runner = _run_frames(view, batches, context, caller, dead_letters, stopped, others or {})
    async with aclosing(runner) as tables:
        async for table in tables:
            yield table


def _until_stopped(items: Iterable[T], stopped: Callable[[], bool]) -> Iterator[T]:
    for item in items:
        if stopped():
            raise Interrupted("The run was interrupted before this interval was finished.")
        yield item


async def _run_python(
    view: BatchFeatureView,
    batches: Iterable[pa.RecordBatch],
    context: BatchContext,
    caller: Caller,
    dead_letters: DeadLetters,
    stopped: Callable[[], bool],
) -> AsyncIterator[pa.Table]:
    """One call per row, up to `view.concurrency` at once across batch (and interval)
    boundaries."""
    sources: deque[pa.RecordBatch] = deque()

    def rows() -> Iterator[dict[str, Any]]:
        for batch in batches:
            sources.append(batch)
            yield from to_rows(batch)

    def finish(row: dict[str, Any], outcome: tuple[Any, int] | FailedCall) -> dict | None:
        """The features for one source row, or None when it is skipped."""
        if isinstance(outcome, FailedCall):
            error = _transform_error(view, outcome, lambda: f"the row {describe_row(view, row)}")
            return _apply_policy(view, [row], outcome.attempts, error, dead_letters)[0]
        returned, attempts = outcome
        try:
            return checked_features(view, row, returned)
        except OutputError as error:
            return _apply_policy(view, [row], attempts, error, dead_letters)[0]

    async def compute(one: list[dict[str, Any]]) -> list[dict | None]:
        try:
            outcome: tuple[Any, int] | FailedCall = await caller(one[0], context)
        except FailedCall as failed:
            outcome = failed
        return [finish(one[0], outcome)]

    async def compute_chunk(chunk: list[dict[str, Any]]) -> list[dict | None]:
        outcomes = await caller.call_rows(chunk, context)
        return [finish(row, outcome) for row, outcome in zip(chunk, outcomes, strict=True)]

    if caller.runs_rows_in_chunks:
        dispatch = caller.dispatch
        chunks = _until_stopped(_chunks(rows(), lambda: dispatch.chunk_size), stopped)
        calls = ordered_map(chunks, compute_chunk, lambda: dispatch.in_flight, caller.places)
    else:
        singles = _until_stopped(([row] for row in rows()), stopped)
        calls = ordered_map(singles, compute, view.concurrency, caller.places)
    done: list[dict | None] = []
    async with aclosing(calls) as results:
        async for finished in results:
            done.extend(finished)
            while sources and len(done) >= sources[0].num_rows:
                source = sources.popleft()
                returned, done = done[: source.num_rows], done[source.num_rows :]
                yield _rows_table(view, source, returned, context, dead_letters)


def _chunks(rows: Iterator[T], size: Callable[[], int]) -> Iterator[list[T]]:
    """Consecutive lists of rows, each as long as `size()` says at the time."""
    while chunk := list(itertools.islice(rows, size())):
        yield chunk


async def _run_frames(
    view: BatchFeatureView,
    batches: Iterable[pa.RecordBatch],
    context: BatchContext,
    caller: Caller,
    dead_letters: DeadLetters,
    stopped: Callable[[], bool],
    others: Mapping[str, pa.Table],
) -> AsyncIterator[pa.Table]:
    """One call per micro-batch (or whole frame), up to `view.concurrency` at once; with
    several sources, the call's input is a dict of frames by parameter (see `spread`)."""
    to_frame = _frame_converter(view.mode)
    if view.whole_frames:
        batches = coalesced(batches, WHOLE_FRAME_BYTES)
    whole = {name: to_frame(table) for name, table in others.items()}
    # Each call its own pandas frame (shallow; copy-on-write copies what it changes): a call
    # changing one in place must not change it for the next.
    shared = (lambda frame: frame.copy(deep=False)) if view.mode == "pandas" else (lambda f: f)

    def inputs(batch: pa.RecordBatch) -> Any:
        frame = to_frame(batch)
        if len(view.sources) == 1:
            return frame
        return {view.parameters[0]: frame, **{n: shared(f) for n, f in whole.items()}}

    async def compute(batch: pa.RecordBatch) -> pa.Table:
        def where() -> str:
            first = describe_row(view, batch.slice(0, 1).to_pylist()[0])
            return f"the {batch.num_rows} rows starting at {first}"

        error: RivuletError
        try:
            result, attempts = await caller(inputs(batch), context)
        except FailedCall as failed:
            error, attempts = _transform_error(view, failed, where), failed.attempts
        else:
            try:
                return frame_to_table(view, result, batch, context.start_time, context.end_time)
            except OutputError as output_error:
                error = output_error
        kept = _apply_policy(view, batch.to_pylist(), attempts, error, dead_letters)
        return rows_to_table(view, batch, kept, context.start_time, context.end_time)

    batches = _until_stopped(batches, stopped)
    calls = ordered_map(batches, compute, view.concurrency, caller.places)
    async with aclosing(calls) as tables:
        async for table in tables:
            yield table


def _transform_error(
    view: BatchFeatureView, failed: FailedCall, where: Callable[[], str]
) -> TransformError:
    """A call that failed for good as the TransformError its error policy handles. Rivulet's
    own errors (a resource that cannot be built, an undeclared secret, a stop) are raised as
    they are: they fail the interval whatever the policy."""
    if isinstance(failed.error, RivuletError):
        raise failed.error
    tries = f", after {failed.attempts} attempts" if failed.attempts > 1 else ""
    error = TransformError(
        f"Feature view '{view.name}': the transform raised {type(failed.error).__name__}: "
        f"{one_line(failed.error)} (on {where()}{tries}).",
        view=view.name,
    )
    error.__cause__ = failed.error
    return error


def _rows_table(
    view: BatchFeatureView,
    source: pa.RecordBatch,
    returned: list[dict | None],
    context: BatchContext,
    dead: DeadLetters,
) -> pa.Table:
    """The batch's output table; under skip/null, a row whose values do not cast (or fall
    outside the interval) goes to the dead letters alone instead of failing the interval."""
    start, end = context.start_time, context.end_time
    try:
        return rows_to_table(view, source, returned, start, end)
    except OutputError:
        if view.on_error == "fail":
            raise
    kept = list(returned)
    for index, features in enumerate(returned):
        if features is None:
            continue
        row = source.slice(index, 1)
        try:
            rows_to_table(view, row, [features], start, end)
        except OutputError as error:
            kept[index] = _apply_policy(view, row.to_pylist(), 1, error, dead)[0]
    return rows_to_table(view, source, kept, start, end)


def _apply_policy(
    view: BatchFeatureView,
    rows: list[dict[str, Any]],
    attempts: int,
    error: Exception,
    dead_letters: DeadLetters,
) -> list[dict | None]:
    """The view's on_error for rows whose call failed: raise ("fail"), or record them as dead
    letters and give each no features ("skip": None) or null ones ("null")."""
    if view.on_error == "fail":
        raise error
    for row in rows:
        dead_letters.add(row, attempts, error)
    nulls = dict.fromkeys(view.feature_names) if view.on_error == "null" else None
    return [nulls] * len(rows)


def _frame_converter(mode: str) -> Any:
    if mode == "polars":
        import polars as pl

        return pl.from_arrow
    if mode == "pandas":
        return lambda batch: batch.to_pandas()
    return lambda batch: pa.table(batch)
