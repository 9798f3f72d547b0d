"""The local executor: one worker in this process, or several started with `spawn`."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.define.secrets import Secret
from engine.errors import RivuletError
from engine.plan.secrets import redactor
from engine.plan.tasks import Task
from engine.work.worker import RunSettings, TaskResult, Worker, WorkerReport


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

    One worker runs in this process, which has Polars, DuckDB and the engine imported
    already; a second interpreter would import them again (~0.5 s). Several start with
    `spawn`, not `fork`: Polars and DuckDB start thread pools, and a forked child of such a
    process can deadlock. Every worker imports the job by path.
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
        count = min(self.workers, len(tasks))
        tally = _Tally(count, on_event)
        if count == 1:
            interrupted = _run_here(tasks, settings, secret_values, tally)
            processes: list = []
        else:
            processes, interrupted = _run_spawned(count, tasks, settings, secret_values, tally)
        results = tally.results
        for task in tasks:
            if task not in results:
                results[task] = _lost(task, tally, processes, interrupted)
        return [results[task] for task in tasks], tally.reports, interrupted


class _Tally:
    """What the workers reported so far; passes every event on to `on_event`."""

    def __init__(self, workers: int, on_event: Callable[[Event], None]) -> None:
        self.workers = workers
        self.results: dict[Task, TaskResult] = {}
        self.running: dict[int, Task] = {}
        self.reports: list[WorkerReport] = []
        self.failures: list[WorkerFailed] = []
        self._on_event = on_event

    def handle(self, event: Event) -> None:
        if isinstance(event, TaskStarted):
            self.running[event.worker] = event.task
        elif isinstance(event, TaskResult):
            self.results[event.task] = event
            self.running.pop(event.worker, None)
        elif isinstance(event, WorkerReport):
            self.reports.append(event)
        elif isinstance(event, WorkerFailed):
            self.failures.append(event)
        self._on_event(event)

    def finished(self) -> bool:
        return len(self.reports) + len(self.failures) == self.workers


def _run_here(
    tasks: Sequence[Task], settings: RunSettings, secret_values: Mapping[Secret, str], tally: _Tally
) -> bool:
    """Run the tasks on one worker in this process; return whether it was interrupted.

    Ctrl-C (or SIGTERM) stops the worker at its next row or micro-batch, after which it tears
    down its resources; a second one cancels the interval in progress, which still waits for
    calls already running on threads. An error raised by `on_event` stops the run the same
    way and is raised once the worker has torn down. When this thread already runs an event
    loop (a notebook, an async application), the worker gets a thread of its own, as its
    loop cannot run inside another.
    """
    stop = threading.Event()
    remaining = iter(tasks)
    workers: list[Worker] = []
    callback_errors: list[Exception] = []

    def emit(event: Event) -> None:
        try:
            tally.handle(event)
        except Exception as exc:  # the caller's callback: not the interval's fault
            callback_errors.append(exc)
            stop.set()

    def work() -> None:
        take = lambda: next(remaining, None)  # noqa: E731
        _serve(settings, secret_values, take, emit, stop.is_set, workers.append)

    def cancel() -> None:
        for worker in workers:
            worker.cancel()

    with _stop_on_signals(stop, cancel):
        if _loop_running():
            _on_own_thread(work)
        else:
            work()
    if callback_errors:
        raise callback_errors[0]
    return stop.is_set()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _on_own_thread(work: Callable[[], None]) -> None:
    """Run `work` on a new thread and wait for it, letting signal handlers run meanwhile."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="rivulet-worker", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if errors:
        raise errors[0]


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, cancel: Callable[[], None]) -> Iterator[None]:
    """While in the block, SIGINT and SIGTERM set `stop`, and call `cancel` when it was set
    already. Signal handlers belong to the main thread: elsewhere, signals keep theirs; so
    does a signal this process ignores (started with nohup, say)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: object) -> None:
        if stop.is_set():
            cancel()
        stop.set()

    previous = {
        sig: signal.signal(sig, request_stop)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(sig) != signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _run_spawned(
    count: int,
    tasks: Sequence[Task],
    settings: RunSettings,
    secret_values: Mapping[Secret, str],
    tally: _Tally,
) -> tuple[list, bool]:
    """Run the tasks on `count` spawned worker processes; return them and whether the run
    was interrupted."""
    context = multiprocessing.get_context("spawn")
    todo: Any = context.Queue()
    events: Any = context.Queue()
    stop = context.Event()
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
    interrupted = False
    try:
        for event in _events(events, processes, tally.finished):
            tally.handle(event)
    except KeyboardInterrupt:
        interrupted = True
        stop.set()  # workers abandon their interval, tear down resources, and report
        try:
            for event in _events(events, processes, tally.finished, timeout=_GRACE_SECONDS):
                tally.handle(event)
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
    return processes, interrupted


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


def _lost(task: Task, tally: _Tally, processes: list, interrupted: bool) -> TaskResult:
    """A result for a task no worker finished: its worker died, none could start, or the run
    was interrupted first."""
    if interrupted:
        return TaskResult(
            task, 0, error_kind="Interrupted", error="The run was interrupted before this interval."
        )
    for worker, started in tally.running.items():
        if started == task:
            codes = {p.pid: p.exitcode for p in processes}
            return TaskResult(
                task,
                worker,
                error_kind="Worker error",
                error=f"The worker process {worker} exited (code {codes.get(worker)}) while "
                f"computing {task.label}.",
            )
    if tally.failures:
        first = tally.failures[0]
        return TaskResult(task, first.worker, error_kind=first.error_kind, error=first.error)
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
    _serve(
        settings,
        secret_values,
        todo.get,
        events.put,
        lambda: stop.is_set() or terminated.is_set(),
    )


def _serve(
    settings: RunSettings,
    secret_values: Mapping[Secret, str],
    take: Callable[[], Task | None],
    emit: Callable[[Event], None],
    stopped: Callable[[], bool],
    started: Callable[[Worker], None] = lambda worker: None,
) -> None:
    """Build a worker (handed to `started`) and run the tasks `take` gives until it gives
    None or `stopped()`, emitting each event; the worker always tears down and reports (or
    reports its failure)."""
    try:
        worker = Worker(
            settings,
            secret_values,
            on_rows=lambda task, rows, stats: emit(
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
        emit(WorkerFailed(os.getpid(), kind, redactor(secret_values.values())(str(exc))))
        return
    started(worker)
    try:
        while not stopped() and (task := take()) is not None:
            emit(TaskStarted(task, os.getpid()))
            emit(worker.run(task))
    finally:
        emit(worker.close())
