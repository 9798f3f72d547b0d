"""Running a transform over a stream of source batches, per mode, into output tables.

A call that fails for good follows the view's `on_error`: "fail" raises (the interval is
not committed), "skip" drops its rows, "null" keeps them with null features; skipped and
nulled rows are recorded in the interval's dead letters.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import aclosing
from typing import Any, TypeVar

import pyarrow as pa

from engine.define.feature_views import BatchFeatureView
from engine.errors import Interrupted, OutputError, RivuletError, TransformError, one_line
from engine.work.caller import Caller, FailedCall
from engine.work.calls import ordered_map
from engine.work.context import Context
from engine.write.conform import describe_row, frame_to_table, merge_row, rows_to_table
from engine.write.dead_letters import DeadLetters

T = TypeVar("T")


async def run_transform(
    view: BatchFeatureView,
    batches: Iterable[pa.RecordBatch],
    context: Context,
    caller: Caller,
    dead_letters: DeadLetters,
    stopped: Callable[[], bool],
) -> AsyncIterator[pa.Table]:
    """Yield one output table per source batch, in source order."""
    runner = _run_python if view.mode == "python" else _run_frames
    items = _until_stopped(batches, stopped)
    async with aclosing(runner(view, items, context, caller, dead_letters, stopped)) as tables:
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
    context: Context,
    caller: Caller,
    dead_letters: DeadLetters,
    stopped: Callable[[], bool],
) -> AsyncIterator[pa.Table]:
    """One call per row, up to `view.concurrency` at once across batch boundaries."""
    sizes: deque[int] = deque()

    def rows() -> Iterator[dict[str, Any]]:
        for batch in batches:
            sizes.append(batch.num_rows)
            yield from _until_stopped(batch.to_pylist(), stopped)

    async def compute(row: dict[str, Any]) -> dict[str, Any] | None:
        attempts = 1
        try:
            returned, attempts = await _call(
                view, caller, row, context, lambda: f"the row {describe_row(view, row)}"
            )
            return merge_row(view, row, returned)
        except _Failed as failed:
            error, attempts = failed.error, failed.attempts
        except OutputError as output_error:
            error = output_error
        if view.on_error == "fail":
            raise error
        dead_letters.add(row, attempts, error)
        return _null_row(view, row) if view.on_error == "null" else None

    done: list[dict[str, Any] | None] = []
    async with aclosing(ordered_map(rows(), compute, view.concurrency)) as results:
        async for row in results:
            done.append(row)
            if len(done) == sizes[0]:
                sizes.popleft()
                yield _rows_table(view, [r for r in done if r is not None], context, dead_letters)
                done = []


async def _run_frames(
    view: BatchFeatureView,
    batches: Iterable[pa.RecordBatch],
    context: Context,
    caller: Caller,
    dead_letters: DeadLetters,
    stopped: Callable[[], bool],
) -> AsyncIterator[pa.Table]:
    """One call per micro-batch, up to `view.concurrency` batches at once."""
    to_frame = _frame_converter(view.mode)

    async def compute(batch: pa.RecordBatch) -> pa.Table:
        def where() -> str:
            first = describe_row(view, batch.slice(0, 1).to_pylist()[0])
            return f"the micro-batch of {batch.num_rows} rows starting at {first}"

        attempts = 1
        try:
            result, attempts = await _call(view, caller, to_frame(batch), context, where)
            return frame_to_table(view, result, batch, context.start_time, context.end_time)
        except _Failed as failed:
            error, attempts = failed.error, failed.attempts
        except OutputError as output_error:
            error = output_error
        if view.on_error == "fail":
            raise error
        rows = batch.to_pylist()
        for row in rows:
            dead_letters.add(row, attempts, error)
        kept = [_null_row(view, row) for row in rows] if view.on_error == "null" else []
        return rows_to_table(view, kept, context.start_time, context.end_time)

    async with aclosing(ordered_map(batches, compute, view.concurrency)) as tables:
        async for table in tables:
            yield table


class _Failed(Exception):
    """A transform call that failed for good, as the error to report and its attempts."""

    def __init__(self, error: TransformError, attempts: int) -> None:
        self.error = error
        self.attempts = attempts


async def _call(
    view: BatchFeatureView, caller: Caller, data: Any, context: Context, where: Callable[[], str]
) -> tuple[Any, int]:
    """Call the transform through the caller. A user error that persists becomes _Failed
    (for the error policy); Rivulet's own errors (a resource that cannot be built, an
    undeclared secret) propagate and fail the interval whatever the policy."""
    try:
        return await caller(data, context)
    except FailedCall as failed:
        if isinstance(failed.error, RivuletError):
            raise failed.error from None
        tries = f", after {failed.attempts} attempts" if failed.attempts > 1 else ""
        error = TransformError(
            f"Feature view '{view.name}': the transform raised {type(failed.error).__name__}: "
            f"{one_line(failed.error)} (on {where()}{tries})."
        )
        error.__cause__ = failed.error
        raise _Failed(error, failed.attempts) from failed.error


def _rows_table(
    view: BatchFeatureView, rows: list[dict[str, Any]], context: Context, dead: DeadLetters
) -> pa.Table:
    """The rows as a table; under skip/null, a row whose values do not cast (or fall outside
    the interval) goes to the dead letters alone instead of failing the interval."""
    try:
        return rows_to_table(view, rows, context.start_time, context.end_time)
    except OutputError:
        if view.on_error == "fail":
            raise
    kept = []
    for row in rows:
        try:
            rows_to_table(view, [row], context.start_time, context.end_time)
            kept.append(row)
        except OutputError as error:
            dead.add(row, 1, error)
            if view.on_error == "null":
                kept.append(_null_row(view, row))
    return rows_to_table(view, kept, context.start_time, context.end_time)


def _null_row(view: BatchFeatureView, row: dict[str, Any]) -> dict[str, Any]:
    return merge_row(view, row, {f.name: None for f in view.features})


def _frame_converter(mode: str) -> Any:
    if mode == "polars":
        import polars as pl

        return pl.from_arrow
    if mode == "pandas":
        return lambda batch: batch.to_pandas()
    return lambda batch: pa.Table.from_batches([batch])
