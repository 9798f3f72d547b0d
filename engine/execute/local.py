"""The local executor: worker processes started with `spawn`, fed from one task queue."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.define.secrets import Secret
from engine.errors import RivuletError
from engine.plan.tasks import Task
from engine.work.worker import RunSettings, TaskResult, Worker, WorkerReport, secret_fragments


@dataclass(frozen=True)
class TaskStarted:
    task: Task
    worker: int


@dataclass(frozen=True)
class RowsWritten:
    """A batch of rows written, with the worker's running call counts for progress."""

    task: Task
    rows: int
    worker: int
    calls: int
    retries: int
    throttle_seconds: float


@dataclass(frozen=True)
class WorkerFailed:
    """A worker could not start (its job import or set-up failed)."""

    worker: int
    error_kind: str
    error: str


_GRACE_SECONDS = 30.0  # how long an interrupted run waits for workers to tear down

Event = TaskStarted | RowsWritten | TaskResult | WorkerReport | WorkerFailed


class LocalExecutor:
    """Runs tasks on `workers` processes of this machine, each holding its own resources.

    Processes start with `spawn`, not `fork`: Polars and DuckDB start thread pools, and a
    forked child of such a process can deadlock. Each worker imports the job by path.
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def run(
        self,
        tasks: Sequence[Task],
        settings: RunSettings,
        secret_values: Mapping[Secret, str],
        on_event: Callable[[Event], None],
    ) -> tuple[list[TaskResult], list[WorkerReport], bool]:
        """Run every task; return each task's result, each worker's report, and whether the
        run was interrupted (Ctrl-C), in which case workers stopped early but still tore
        down their resources."""
        if not tasks:
            return [], [], False
        context = multiprocessing.get_context("spawn")
        todo: Any = context.Queue()
        events: Any = context.Queue()
        stop = context.Event()
        count = min(self.workers, len(tasks))
        for task in tasks:
            todo.put(task)
        for _ in range(count):
            todo.put(None)
        processes = [
            context.Process(
                target=_worker_main,
                args=(settings, dict(secret_values), todo, events, stop),
                name=f"rivulet-worker-{i}",
                daemon=True,
            )
            for i in range(count)
        ]
        for process in processes:
            process.start()
        results: dict[Task, TaskResult] = {}
        running: dict[int, Task] = {}
        reports: list[WorkerReport] = []
        failures: list[WorkerFailed] = []

        def handle(event: Event) -> None:
            if isinstance(event, TaskStarted):
                running[event.worker] = event.task
            elif isinstance(event, TaskResult):
                results[event.task] = event
                running.pop(event.worker, None)
            elif isinstance(event, WorkerReport):
                reports.append(event)
            elif isinstance(event, WorkerFailed):
                failures.append(event)
            on_event(event)

        def finished() -> bool:
            return len(reports) + len(failures) == count

        interrupted = False
        try:
            for event in _events(events, processes, finished):
                handle(event)
        except KeyboardInterrupt:
            interrupted = True
            stop.set()  # workers abandon their interval, tear down resources, and report
            try:
                for event in _events(events, processes, finished, timeout=_GRACE_SECONDS):
                    handle(event)
            except KeyboardInterrupt:
                pass  # a second Ctrl-C: stop waiting for the workers
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()  # the worker stops at its next row and tears down
                process.join(timeout=_GRACE_SECONDS)
                if process.is_alive():
                    process.kill()
                    process.join()
        for task in tasks:
            if task not in results:
                results[task] = _lost(task, running, failures, processes, interrupted)
        return [results[task] for task in tasks], reports, interrupted


def _events(
    events: Any, processes: list, finished: Callable[[], bool], timeout: float | None = None
) -> Any:
    """Events from the workers until every worker has reported or exited (or `timeout`)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not finished():
        if deadline is not None and time.monotonic() > deadline:
            return
        try:
            yield events.get(timeout=0.2)
        except queue.Empty:
            if all(p.exitcode is not None for p in processes):
                while True:  # a worker that exited may have left events in the pipe
                    try:
                        yield events.get(timeout=0.2)
                    except queue.Empty:
                        return


def _lost(
    task: Task,
    running: dict[int, Task],
    failures: list[WorkerFailed],
    processes: list,
    interrupted: bool,
) -> TaskResult:
    """A result for a task no worker finished: its worker died, none could start, or the run
    was interrupted first."""
    if interrupted:
        return TaskResult(
            task, 0, error_kind="Interrupted", error="The run was interrupted before this interval."
        )
    for worker, started in running.items():
        if started == task:
            codes = {p.pid: p.exitcode for p in processes}
            return TaskResult(
                task,
                worker,
                error_kind="Worker error",
                error=f"The worker process {worker} exited (code {codes.get(worker)}) while "
                f"computing {task.label}.",
            )
    if failures:
        return TaskResult(
            task, failures[0].worker, error_kind=failures[0].error_kind, error=failures[0].error
        )
    return TaskResult(task, 0, error_kind="Worker error", error=f"No worker ran {task.label}.")


def _worker_main(
    settings: RunSettings, secret_values: dict[Secret, str], todo: Any, events: Any, stop: Any
) -> None:
    """The body of a worker process: take tasks until the None sentinel, then report."""
    # Ctrl-C is the parent's to handle: it sets `stop`. SIGTERM (the parent giving up on a
    # slow stop, or a scheduler) stops this worker the same way, so teardown still runs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.set())

    def stopped() -> bool:
        return stop.is_set() or terminated.is_set()

    try:
        worker = Worker(
            settings,
            secret_values,
            on_rows=lambda task, rows, stats: events.put(
                RowsWritten(
                    task,
                    rows,
                    os.getpid(),
                    stats.calls,
                    sum(stats.retries.values()),
                    stats.limiter_wait_seconds,
                )
            ),
            stopped=stopped,
        )
    except Exception as exc:
        kind = exc.kind if isinstance(exc, RivuletError) else "Worker error"
        message = str(exc)
        for fragment in secret_fragments(secret_values.values()):
            message = message.replace(fragment, "***")
        events.put(WorkerFailed(os.getpid(), kind, message))
        return
    try:
        while not stopped() and (task := todo.get()) is not None:
            events.put(TaskStarted(task, os.getpid()))
            events.put(worker.run(task))
    finally:
        events.put(worker.close())
