"""The contract between the driver of a run and where its workers run.

An `Executor` receives the run's tasks (one feature view x one interval each, plain values),
the `RunSettings` every worker shares (the job's path, the output folder, the run id, the
per-worker rates) and the resolved secret values. It runs each task on some worker that
hosts `serve()`, the worker loop (in this process, a spawned process, a thread, an actor),
and passes every event a worker emits to `on_event`, on the thread that called `execute`:

    TaskWanted      a worker will take another task: the executor gives it one, or None
    TaskStarted     a worker began a task
    RowsWritten     a batch of rows was written (progress, with running call counts)
    TaskResult      a task ended: the file it committed (path, rows, fingerprint), or its
                    error; the driver records it in the ledger, so each task's result is
                    passed on exactly once
    WorkerReport    a worker tore its resources down; its call statistics
    WorkerFailed    a worker could not start (the job did not import, say)
    WorkerExited    a worker died under a task, and what became of the task
    Stopping        a signal asked the run to stop (first) or cancel (second)

When a worker dies under a task, the executor offers the task to `recover` (the driver
checks whether its file was renamed into place before the death, and if so returns its
result), else runs it again on another worker, a bounded number of times, then gives it a
failed TaskResult. `execute` returns an `Outcome`: one TaskResult per task, in the tasks' order
(an interrupted run's unstarted tasks have error_kind "Interrupted"), every WorkerReport,
and whether the run was interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.define.secrets import Secret
from engine.errors import RivuletError
from engine.plan.secrets import redactor
from engine.plan.tasks import Task
from engine.work.worker import (
    RunSettings,
    TaskResult,
    TaskStarted,
    TaskWanted,
    Worker,
    WorkerReport,
)

__all__ = [
    "Event",
    "Executor",
    "Outcome",
    "Recover",
    "RowsWritten",
    "RunSettings",
    "Stopping",
    "Task",
    "TaskResult",
    "TaskStarted",
    "TaskWanted",
    "WorkerExited",
    "WorkerFailed",
    "WorkerReport",
    "serve",
]


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
class Stopping:
    """A signal asked the run to stop (`cancel`: the second, abandoning calls in flight)."""

    cancel: bool


@dataclass(frozen=True)
class WorkerExited:
    """A worker (a process, an actor) died (killed, out of memory) while computing `task`."""

    worker: int
    exitcode: int | None
    task: Task
    outcome: str  # "retried" on a fresh worker, "committed" (its file was in place), "failed"
    tries: int  # workers a task is tried on before it fails

    @property
    def note(self) -> str:
        then = {
            "retried": "it is retried on a fresh worker",
            "committed": "its file was already committed, and is recorded",
            "failed": f"it was tried on {self.tries} workers and fails",
        }[self.outcome]
        return (
            f"Worker {self.worker} exited (code {self.exitcode}) while computing "
            f"{self.task.label}; {then}."
        )


@dataclass(frozen=True)
class WorkerFailed:
    """A worker could not start (its job import or set-up failed)."""

    worker: int
    error_kind: str
    error: str


Event = (
    TaskWanted
    | TaskStarted
    | RowsWritten
    | TaskResult
    | WorkerReport
    | WorkerFailed
    | WorkerExited
    | Stopping
)
Recover = Callable[[Task], TaskResult | None]


@dataclass(frozen=True)
class Outcome:
    """What an executor returns: a result per task, in order, and every worker's report."""

    results: list[TaskResult]
    reports: list[WorkerReport]
    interrupted: bool


class Executor(Protocol):
    """Runs a run's tasks on workers; see the module docstring for the whole contract.
    `workers` is how many run at once: the run's rate limits are split among them."""

    workers: int

    def execute(
        self,
        tasks: Sequence[Task],
        settings: RunSettings,
        secret_values: Mapping[Secret, str],
        on_event: Callable[[Event], None],
        recover: Recover = ...,
    ) -> Outcome: ...


def serve(
    settings: RunSettings,
    secret_values: Mapping[Secret, str],
    take: Callable[[], Task | None],
    emit: Callable[[Event], None],
    stopped: Callable[[], bool],
    started: Callable[[Worker], None] = lambda worker: None,
    worker_id: int | None = None,
) -> None:
    """The worker loop, for any executor to host in a process, thread or actor of its own:
    build a worker (handed to `started`), then run the tasks `take` gives until it gives
    None or `stopped()`, emitting each event; the worker always tears down and reports (or
    reports its failure). `worker_id` names the worker in events (default: the pid).

    A worker takes its next task while others still run (Worker.materialize_all), and
    emits TaskWanted before each take but the first: an executor whose `take` waits for
    the driver gives a worker one task (or None) as it starts it, then one per TaskWanted.

    Example:
        serve(settings, secret_values, tasks.pop, events.put, stop.is_set)
    """
    me = os.getpid() if worker_id is None else worker_id
    try:
        worker = Worker(
            settings,
            secret_values,
            on_rows=lambda task, rows, stats: emit(
                RowsWritten(
                    task,
                    rows,
                    me,
                    stats.calls,
                    sum(stats.retries.values()),
                    stats.limiter_wait_seconds,
                )
            ),
            stopped=stopped,
            worker_id=me,
        )
    except Exception as exc:
        kind = exc.kind if isinstance(exc, RivuletError) else "Worker error"
        emit(WorkerFailed(me, kind, redactor(secret_values.values())(str(exc))))
        return
    started(worker)
    try:
        worker.materialize_all(take, emit)
    finally:
        emit(worker.close())
