"""A worker: imports the job once, holds its resources, and runs the tasks it is given,
the next one's rows starting while the last calls of the one before finish."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pyarrow as pa

from engine.define.feature_views import BatchFeatureView
from engine.define.secrets import Secret
from engine.errors import Interrupted, RivuletError, one_line
from engine.faults import fault_point
from engine.plan.job import load_job
from engine.plan.secrets import literal_secrets, redactor
from engine.plan.tasks import Task
from engine.read.sources import read_table, read_window
from engine.runtime.caller import Caller, CallSpec, spread
from engine.runtime.context import Resources, Secrets
from engine.runtime.inflight import Places
from engine.runtime.limits import Limits
from engine.runtime.resources import ResourcePool
from engine.runtime.shared_limits import SharedBuckets
from engine.runtime.stats import CallStats
from engine.runtime.stopping import Stopper
from engine.runtime.threads import DaemonThreads
from engine.store.dead_letters import DeadLetters
from engine.store.parquet import AlreadyCommitted, PartitionWriter, partition_dir
from engine.store.tiles import stored_schema, tile_rows
from engine.work.modes import BatchContext, run_transform


@dataclass(frozen=True)
class RunSettings:
    """What every task of a run shares; plain values, sent to each worker once."""

    job_path: str
    output: str
    run_id: str
    rates: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per-worker (requests per second, burst) by provider name: the run's limit / workers."""
    requirements: tuple[str, ...] = ()
    """What the views' Environments require: checked here, installed by a cluster's runtime."""
    limiter: str | None = None
    """redis://HOST:PORT/DB of rate limits shared by every worker (then `rates` are whole)."""


T = TypeVar("T")
OPEN_INTERVALS = 16  # intervals a worker runs at once, at most (see Worker.materialize_all)
OPEN_WHOLE_FRAMES = 2  # ... of views computed in whole frames: they make no calls to keep
# in flight, and each holds a frame; one interval's read beside another's compute is all


@dataclass(frozen=True)
class TaskWanted:
    """A worker will take another task: it is given one, or None for no more."""

    worker: int


@dataclass(frozen=True)
class TaskStarted:
    """A worker began a task."""

    task: Task
    worker: int


@dataclass(frozen=True)
class TaskResult:
    """The outcome of one task, a plain value the driver records in the ledger: the file a
    worker renamed into place (`path`, `rows`, `fingerprint`), or on failure `error` as one
    paragraph and `detail` the traceback, both with secret values redacted."""

    task: Task
    worker: int
    rows: int = 0
    seconds: float = 0.0
    path: str | None = None
    fingerprint: str | None = None
    started_at: datetime | None = None
    error_kind: str | None = None
    error: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class WorkerReport:
    """What a worker did over the whole run: its calls and its resources' lifecycle."""

    worker: int
    stats: CallStats = field(default_factory=CallStats)


class Worker:
    """Runs tasks of one job in this process, sharing resources across tasks and batches.

    Example:
        worker = Worker(settings, secret_values)
        worker.materialize_all(tasks.pop, events.append)  # or one: worker.materialize(task)
        report = worker.close()
    """

    def __init__(
        self,
        settings: RunSettings,
        secret_values: Mapping[Secret, str],
        on_rows: Callable[[Task, int, CallStats], None] = lambda task, rows, stats: None,
        stopped: Callable[[], bool] = lambda: False,
        worker_id: int | None = None,
    ) -> None:
        self.settings = settings
        self.id = os.getpid() if worker_id is None else worker_id
        self.job = load_job(settings.job_path)
        self._secret_values = secret_values
        literals = literal_secrets(self.job.feature_views.values())
        self._redact = redactor([*secret_values.values(), *literals])
        self._on_rows = on_rows
        self._stopper = Stopper()
        self._stopped = lambda: self._stopper.stopped or stopped()
        self._loop = asyncio.new_event_loop()
        most = max(view.concurrency for view in self.job.feature_views.values())
        # Daemon threads: a call stuck for good must not keep the process from exiting once
        # its timeout (or a second Ctrl-C) abandoned it.
        self._threads = DaemonThreads(most, "rivulet-call")
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rivulet-write")
        self._taking = DaemonThreads(1, "rivulet-take")  # a take may wait for the driver
        self._stats = CallStats()
        self._pool = ResourcePool(secret_values, self._stats, self._redact, self._stopper)
        self._shared = (
            SharedBuckets(settings.limiter, settings.rates, self._stopper)
            if settings.limiter
            else None
        )
        self._limits = Limits(settings.rates, self._stats, self._stopper, self._shared)
        self._callers: dict[str, Caller] = {}
        self._commits = 0
        self._running: dict[asyncio.Task[TaskResult], Task] = {}  # what cancel() cancels

    def materialize(self, task: Task) -> TaskResult:
        """Compute one interval of one feature view and commit its Parquet file; the result
        says what the driver is to record."""
        running = self._loop.create_task(self._run(task, lambda: None))
        self._running[running] = task
        try:
            return self._loop.run_until_complete(running)
        finally:
            del self._running[running]

    def materialize_all(
        self,
        take: Callable[[], Task | None],
        emit: Callable[[TaskWanted | TaskStarted | TaskResult], None],
    ) -> None:
        """Run the tasks `take` gives (emitting TaskWanted before each take but the first,
        then TaskStarted and TaskResult) until it gives None or the worker stops.

        The next task is taken once every task running has read its whole source and has
        places for calls to spare, so its rows start while the last calls of the others
        finish, under the same concurrency: short intervals keep calls in flight across
        their boundaries. Each interval still commits on its own, as it finishes; at most
        OPEN_INTERVALS run at once (OPEN_WHOLE_FRAMES with a view computed in whole frames).
        """
        self._loop.run_until_complete(self._run_all(take, emit))

    async def _run_all(
        self,
        take: Callable[[], Task | None],
        emit: Callable[[TaskWanted | TaskStarted | TaskResult], None],
    ) -> None:
        running = self._running
        unread: set[Task] = set()  # running tasks whose source is not read to its end
        changed = asyncio.Event()  # a source was read, or a task ended
        asking: asyncio.Future[Task | None] | None = None
        more, taken = True, False

        def read(task: Task) -> None:
            unread.discard(task)
            changed.set()

        while True:
            if self._stopped():
                more = False
            full = {p for p in self._places(running.values()) if p.full}
            ready = not unread and not full and len(running) < self._most_open(running.values())
            if more and asking is None and ready:
                if running or taken:  # the first task comes unasked, as the worker starts
                    emit(TaskWanted(self.id))
                asking, taken = self._loop.run_in_executor(self._taking, take), True
            if not running and (asking is None or not more):
                return
            changed.clear()
            woken = [asyncio.ensure_future(changed.wait())]
            if not unread:  # a place freed may be what lets the next task in
                woken += [asyncio.ensure_future(p.freed()) for p in full]
            waits = {*woken, *running, *([asking] if asking and more else [])}
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiter in woken:
                waiter.cancel()
            if asking is not None and asking in done:
                task, asking = asking.result(), None
                if task is None or self._stopped():  # a task given after a stop is not run
                    more = False
                else:
                    emit(TaskStarted(task, self.id))
                    unread.add(task)
                    started = self._loop.create_task(self._run(task, functools.partial(read, task)))
                    running[started] = task
            for ended in done & running.keys():
                unread.discard(running.pop(ended))
                emit(ended.result())

    def _most_open(self, tasks: Iterable[Task]) -> int:
        views = self.job.feature_views
        whole = any(views[task.feature_view].whole_frames for task in tasks)
        return OPEN_WHOLE_FRAMES if whole else OPEN_INTERVALS

    def _places(self, tasks: Iterable[Task]) -> list[Places]:
        """The places for calls in flight of the running tasks' views on this worker (a
        view whose caller is not made yet has none taken)."""
        callers = (self._callers.get(task.feature_view) for task in tasks)
        return [caller.places for caller in callers if caller is not None]

    async def _run(self, task: Task, read: Callable[[], None]) -> TaskResult:
        """One task's result: its committed file, or its error (a cancel is an interrupt)."""
        began, started_at = time.perf_counter(), datetime.now(UTC)
        try:
            path, rows = await self._compute(task, read)
        except (Exception, asyncio.CancelledError) as caught:
            exc = (
                Interrupted("The run was interrupted before this interval was finished.")
                if isinstance(caught, asyncio.CancelledError)
                else caught
            )
            kind = exc.kind if isinstance(exc, RivuletError) else "Internal error"
            message = (
                str(exc)
                if isinstance(exc, RivuletError)
                else f"{type(exc).__name__}: {one_line(exc)}"
            )
            return TaskResult(
                task,
                self.id,
                seconds=time.perf_counter() - began,
                started_at=started_at,
                error_kind=kind,
                error=self._redact(message),
                detail=self._redact("".join(traceback.format_exception(exc))),
            )
        fingerprint = self.job.feature_views[task.feature_view].fingerprint
        seconds = time.perf_counter() - began
        return TaskResult(task, self.id, rows, seconds, str(path), fingerprint, started_at)

    async def _compute(self, task: Task, read: Callable[[], None]) -> tuple[Path, int]:
        view = self.job.feature_views[task.feature_view]
        for _, provider in view.resource_providers:
            await self._pool.acquire(provider)
        context = BatchContext(
            resources=Resources(
                f"Feature view '{view.name}'", dict(view.resource_providers), self._pool
            ),
            secrets=Secrets(f"Feature view '{view.name}'", view.secrets, self._secret_values),
            start_time=task.start,
            end_time=task.end,
            batch_schedule=view.batch_schedule,
            _limits=self._limits,
            _loop=self._loop,
        )
        metadata = {
            "rivulet.job": self.job.name,
            "rivulet.feature_view": view.name,
            "rivulet.fingerprint": view.fingerprint,
            "rivulet.run_id": self.settings.run_id,
            "rivulet.interval_start": task.start.isoformat(),
            "rivulet.interval_end": task.end.isoformat(),
        }
        caller = self._callers.get(view.name)
        if caller is None:
            spec = CallSpec.of(view)
            if len(view.sources) > 1:
                spec = replace(spec, function=spread(view.function))
            caller = Caller(
                spec,
                self._pool,
                self._limits,
                self._stats,
                self._threads,
                self._stopper,
            )
            self._callers[view.name] = caller
        dead_letters = DeadLetters(view, task.start, task.end, self._redact)
        folder = partition_dir(self.settings.output, view.name, task.start)
        first, *rest = view.sources
        batches = _then(read_window(view, first, task.start, task.end), read)
        others = {
            parameter: read_table(view, source, task.start, task.end)
            for parameter, source in zip(view.parameters[1:], rest, strict=True)
        }
        schema, keys = stored_schema(view), view.carried_columns
        with PartitionWriter(folder, schema, metadata, filtered_on=keys) as writer:
            outputs = run_transform(
                view, batches, context, caller, dead_letters, self._stopped, others
            )
            if view.aggregates:
                outputs = self._tiled(view, outputs)
            async with aclosing(outputs):
                await self._write(task, outputs, writer)
            if self._stopped():  # stopped while the last batch was written: commit nothing
                raise Interrupted("The run was interrupted before this interval was finished.")
            try:
                path = await self._on_writer(writer.commit)  # its fsyncs do not stall the loop
            except AlreadyCommitted as first:  # an attempt presumed dead was not: its file
                return first.path, first.rows  # stands, with its own dead letters
        # Dead letters follow their data: a crash between the two leaves data whose rerun
        # (an adopted file) simply has no dead-letter file, never dead letters without data.
        dead_letters.commit(self.settings.output, metadata)
        self._stats.dead_lettered += len(dead_letters.rows)
        self._commits += 1
        fault_point("committed", self._commits)
        return path, writer.rows

    async def _write(
        self, task: Task, tables: AsyncIterator[pa.Table], writer: PartitionWriter
    ) -> None:
        """Write each table on the writer thread while the next one is computed: one write in
        flight, in order. The file is not left to close under a running write."""
        in_flight: asyncio.Future[None] | None = None
        rows = 0
        try:
            async for table in tables:
                if in_flight is not None:
                    await in_flight
                    self._on_rows(task, rows, self._stats)
                in_flight = self._loop.run_in_executor(self._writes, writer.write, table)
                rows = table.num_rows
        except BaseException:
            if in_flight is not None:
                await asyncio.wait([in_flight])
            raise
        if in_flight is not None:
            await in_flight
            self._on_rows(task, rows, self._stats)

    async def _tiled(
        self, view: BatchFeatureView, tables: AsyncIterator[pa.Table]
    ) -> AsyncIterator[pa.Table]:
        """The interval's rows as one table of tiles, computed on the writer thread."""
        rows = [table async for table in tables]
        merged = pa.concat_tables(rows) if rows else view.row_schema().empty_table()
        yield await self._loop.run_in_executor(self._writes, tile_rows, view, merged)

    async def _on_writer(self, function: Callable[[], T]) -> T:
        """`function()` on the writer thread, after the writes queued there; a cancel waits
        for it to end, as the file must not close under it."""
        running = self._loop.run_in_executor(self._writes, function)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            await asyncio.wait([running])
            raise

    def stop(self) -> None:
        """Stop, from any thread: no new row or micro-batch starts and every wait (rate
        limit, backoff, resource build) ends at once; calls already running finish."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs
            self._loop.call_soon_threadsafe(self._stopper.stop)

    def cancel(self) -> None:
        """Cancel the interval in progress, from any thread: it unwinds at once, abandoning
        calls still running on threads (they cannot be stopped, and end on their own)."""

        def cancel_running() -> None:
            self._stopper.stop()
            for running in self._running:
                running.cancel()

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(cancel_running)

    def close(self) -> WorkerReport:
        """Tear down every resource this worker built and report the counts."""
        try:
            self._loop.run_until_complete(self._pool.close())
            if self._shared is not None:
                self._loop.run_until_complete(self._shared.close())
        finally:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._writes.shutdown(wait=False, cancel_futures=True)
            self._taking.shutdown(wait=False, cancel_futures=True)
            self._loop.close()
        return WorkerReport(self.id, self._stats)


def _then(batches: Iterable[pa.RecordBatch], read: Callable[[], None]) -> Iterator[pa.RecordBatch]:
    """The batches, calling `read` once the last was taken (the source is read)."""
    yield from batches
    read()
