"""Running a transform over a stream of source batches, per mode, into output tables."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from engine.define.feature_views import BatchFeatureView
from engine.errors import RivuletError, TransformError
from engine.work.calls import call, ordered_map
from engine.work.context import Context
from engine.write.conform import describe_row, frame_to_table, merge_row, rows_to_table


async def run_transform(
    view: BatchFeatureView,
    batches: Iterable[pa.RecordBatch],
    context: Context,
    threads: ThreadPoolExecutor,
) -> AsyncIterator[pa.Table]:
    """Yield one output table per source batch, in source order."""
    runner = _run_python if view.mode == "python" else _run_frames
    async for table in runner(view, batches, context, threads):
        yield table


async def _run_python(
    view: BatchFeatureView,
    batches: Iterable[pa.RecordBatch],
    context: Context,
    threads: ThreadPoolExecutor,
) -> AsyncIterator[pa.Table]:
    """One call per row, up to `view.concurrency` at once across batch boundaries."""
    sizes: deque[int] = deque()

    def rows() -> Iterator[dict[str, Any]]:
        for batch in batches:
            sizes.append(batch.num_rows)
            yield from batch.to_pylist()

    async def compute(row: dict[str, Any]) -> dict[str, Any]:
        returned = await _invoke(
            view, threads, row, context, lambda: f"the row {describe_row(view, row)}"
        )
        return merge_row(view, row, returned)

    done: list[dict[str, Any]] = []
    async for row in ordered_map(rows(), compute, view.concurrency):
        done.append(row)
        if len(done) == sizes[0]:
            sizes.popleft()
            yield rows_to_table(view, done, context.start_time, context.end_time)
            done = []


async def _run_frames(
    view: BatchFeatureView,
    batches: Iterable[pa.RecordBatch],
    context: Context,
    threads: ThreadPoolExecutor,
) -> AsyncIterator[pa.Table]:
    """One call per micro-batch, up to `view.concurrency` batches at once."""
    to_frame = _frame_converter(view.mode)

    async def compute(batch: pa.RecordBatch) -> pa.Table:
        def where() -> str:
            first = describe_row(view, batch.slice(0, 1).to_pylist()[0])
            return f"the micro-batch of {batch.num_rows} rows starting at {first}"

        result = await _invoke(view, threads, to_frame(batch), context, where)
        return frame_to_table(view, result, batch, context.start_time, context.end_time)

    async for table in ordered_map(batches, compute, view.concurrency):
        yield table


async def _invoke(
    view: BatchFeatureView, threads: ThreadPoolExecutor, data: Any, context: Context, where: Any
) -> Any:
    """Call the transform; turn a user exception into a TransformError naming view and row."""
    kwargs = {"context": context} if view.takes_context else {}
    try:
        return await call(threads, view.function, data, **kwargs)
    except RivuletError:
        raise
    except Exception as exc:
        raise TransformError(
            f"Feature view '{view.name}': the transform raised {type(exc).__name__}: {exc} "
            f"(on {where()})."
        ) from exc


def _frame_converter(mode: str) -> Any:
    if mode == "polars":
        import polars as pl

        return pl.from_arrow
    if mode == "pandas":
        return lambda batch: batch.to_pandas()
    return lambda batch: pa.Table.from_batches([batch])
