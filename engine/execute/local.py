"""The local executor: one worker in this process, or several started with `spawn`; both
host the worker loop `serve()` of engine.execute.protocol."""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from engine.define.secrets import Secret
from engine.execute.protocol import (
    Event,
    Outcome,
    Recover,
    RunSettings,
    Stopping,
    Task,
    TaskResult,
    WorkerExited,
    WorkerFailed,
    WorkerReport,
    serve,
)
from engine.work.worker import Worker

_GRACE_SECONDS = 30.0  # how long a stopped run waits for workers to tear down
_CANCEL_SECONDS = 5.0  # after a second signal: how long before workers are killed
_TRIES = 3  # workers a task is tried on when its worker dies under it
_PARENT_CHECK_SECONDS = 0.5  # how often a worker checks that its parent is alive


class LocalExecutor:
    """Runs tasks on `workers` processes of this machine, each holding its own resources.

    One worker runs in this process, which has Polars, DuckDB and the engine imported
    already; a second interpreter would import them again (~0.5 s). Several start with
    `spawn`, not `fork`: Polars and DuckDB start thread pools, and a forked child of such a
    process can deadlock. Every worker imports the job by path.
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def execute(
        self,
        tasks: Sequence[Task],
        settings: RunSettings,
        secret_values: Mapping[Secret, str],
        on_event: Callable[[Event], None],
        recover: Recover = lambda task: None,
    ) -> Outcome:
        """Run every task, as the Executor protocol says (engine.execute.protocol). On
        Ctrl-C or SIGTERM workers stop early but still tear down their resources. A task
        whose spawned worker dies is retried on a fresh worker, up to `_TRIES` in all.
        """
        if not tasks:
            return Outcome([], [], False)
        count = min(self.workers, len(tasks))
        tally = _Tally(on_event)
        if count == 1:
            interrupted = _run_here(tasks, settings, secret_values, tally)
        else:
            interrupted = _run_spawned(count, tasks, settings, secret_values, tally, recover)
        for task in tasks:
            if task not in tally.results:
                tally.handle(_not_run(task, tally, interrupted))
        return Outcome([tally.results[task] for task in tasks], tally.reports, interrupted)


class _Tally:
    """What the workers reported so far; passes every event on to `on_event`."""

    def __init__(self, on_event: Callable[[Event], None]) -> None:
        self.results: dict[Task, TaskResult] = {}
        self.reported: set[int] = set()
        self.reports: list[WorkerReport] = []
        self.failures: list[WorkerFailed] = []
        self._on_event = on_event

    def handle(self, event: Event) -> None:
        if isinstance(event, TaskResult):
            self.results[event.task] = event
        elif isinstance(event, WorkerReport):
            self.reports.append(event)
            self.reported.add(event.worker)
        elif isinstance(event, WorkerFailed):
            self.failures.append(event)
            self.reported.add(event.worker)
        self._on_event(event)


def _run_here(
    tasks: Sequence[Task], settings: RunSettings, secret_values: Mapping[Secret, str], tally: _Tally
) -> bool:
    """Run the tasks on one worker in this process; return whether it was interrupted.

    Ctrl-C (or SIGTERM) stops the worker at its next row or micro-batch, and ends its waits
    (rate limits, backoff, resource builds) at once, after which it tears down its resources;
    a second one cancels the interval in progress, abandoning calls still running on threads.
    An error raised by `on_event` stops the run the same way and is raised once the worker
    has torn down. When this thread already runs an event loop (a notebook, an async
    application), the worker gets a thread of its own, as its loop cannot run inside another.
    """
    stop = threading.Event()
    remaining = iter(tasks)
    workers: list[Worker] = []
    callback_errors: list[Exception] = []
    own_thread = _loop_running()
    passed_on: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def handle(event: Event) -> None:
        try:
            tally.handle(event)
        except Exception as exc:  # the caller's callback: not the interval's fault
            callback_errors.append(exc)
            stop_all()

    def work() -> None:
        take = lambda: next(remaining, None)  # noqa: E731
        emit = passed_on.put if own_thread else handle  # on_event runs on the caller's thread
        serve(settings, secret_values, take, emit, stop.is_set, workers.append)

    def stop_all() -> None:
        stop.set()
        for worker in workers:
            worker.stop()

    def on_signal(cancel: bool) -> None:
        for worker in workers:
            worker.cancel() if cancel else worker.stop()
        stop.set()
        handle(Stopping(cancel))

    with _stop_on_signals(lambda: on_signal(False), lambda: on_signal(True)):
        if own_thread:
            _on_own_thread(work, passed_on, handle)
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


def _on_own_thread(
    work: Callable[[], None], events: queue.SimpleQueue[Event], handle: Callable[[Event], None]
) -> None:
    """Run `work` on a new thread and `handle` the events it puts, here, until it ends; the
    waits are short, so signal handlers run meanwhile."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="rivulet-worker", daemon=True)
    thread.start()
    while thread.is_alive() or not events.empty():
        with contextlib.suppress(queue.Empty):
            handle(events.get(timeout=0.05))
    if errors:
        raise errors[0]


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], None], cancel: Callable[[], None]) -> Iterator[None]:
    """While in the block, the first SIGINT or SIGTERM calls `stop`, later ones `cancel`.
    Signal handlers belong to the main thread: elsewhere, signals keep theirs; so does a
    signal this process ignores (started with nohup, say)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen = []

    def request_stop(signum: int, frame: object) -> None:
        seen.append(signum)
        (stop if len(seen) == 1 else cancel)()

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
    recover: Recover,
) -> bool:
    """Run the tasks on `count` spawned worker processes; return whether the run was
    interrupted.

    Each worker has an inbox: it gets one task at a time, the next one when it returns a
    result, and None when there is no more work, so this process always knows which task
    a worker holds. The first SIGINT or SIGTERM stops the workers at their next row (they
    tear down and report, within `_GRACE_SECONDS`); a second one terminates them, and
    kills them `_CANCEL_SECONDS` later. A worker that dies under a task is replaced.
    """
    context = multiprocessing.get_context("spawn")
    pipes: dict[Any, int] = {}  # each worker's own event pipe: a worker killed mid-send
    # cannot block the others, as it could holding a shared queue's lock
    stop = context.Event()
    queued = deque(tasks)
    live: dict[int, Any] = {}  # pid: process
    inboxes: dict[int, Any] = {}
    holding: dict[int, Task | None] = {}  # pid: the task it was last given
    tries: Counter[Task] = Counter()

    def start() -> None:
        inbox = context.Queue()
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker_main,
            args=(settings, dict(secret_values), inbox, sender, stop),
            name=f"rivulet-worker-{len(inboxes)}",
            daemon=True,
        )
        process.start()
        sender.close()  # the worker's end: EOF here once the worker is gone
        pipes[receiver] = process.pid
        live[process.pid] = process
        inboxes[process.pid] = inbox
        give(process.pid)

    def give(pid: int) -> None:
        task = queued.popleft() if queued and not stop.is_set() else None
        holding[pid] = task
        inboxes[pid].put(task)

    def died(pid: int, code: int | None) -> None:
        """A worker exited without its report: recover, retry or fail the task it held."""
        task = holding.pop(pid, None)
        if task is None or task in tally.results or stop.is_set():
            return
        result = recover(task)
        if result is not None:
            outcome = "committed"
        elif tries[task] + 1 < _TRIES:
            tries[task] += 1
            outcome = "retried"
            queued.appendleft(task)
        else:
            outcome = "failed"
            result = _worker_died(task, pid, code)
        tally.handle(WorkerExited(pid, code, task, outcome, _TRIES))
        if result is not None:
            tally.handle(result)

    def handle(event: Event) -> None:
        tally.handle(event)
        if isinstance(event, TaskResult) and event.worker in live:
            if live[event.worker].exitcode is None:  # a dead one's task is retried instead
                give(event.worker)
        elif isinstance(event, WorkerReport | WorkerFailed) and event.worker in live:
            process = live.pop(event.worker)  # its last word: it exits right after
            process.join(_CANCEL_SECONDS)
            if process.is_alive():
                process.kill()

    def receive(timeout: float) -> bool:
        """Handle the events the workers sent within `timeout`; whether there were any."""
        ready = multiprocessing.connection.wait(list(pipes), timeout)
        for receiver in ready:
            try:
                handle(receiver.recv())
            except (EOFError, OSError):  # the worker is gone, and so is its end
                del pipes[receiver]
        return bool(ready)

    def drain() -> None:
        """Handle the events already sent (by a worker that exited, say)."""
        while pipes and receive(0.05):
            pass

    for _ in range(count):
        start()
    stopping, cancelled = threading.Event(), threading.Event()
    deadline = math.inf
    with _stop_on_signals(stopping.set, cancelled.set):
        while live:
            if stopping.is_set() and not stop.is_set():
                stop.set()  # workers abandon their interval, tear down, and report
                deadline = time.monotonic() + _GRACE_SECONDS
                tally.handle(Stopping(cancel=False))
            if cancelled.is_set() and deadline > time.monotonic() + _CANCEL_SECONDS:
                for process in live.values():
                    process.terminate()  # the worker cancels its interval and tears down
                deadline = time.monotonic() + _CANCEL_SECONDS
                tally.handle(Stopping(cancel=True))
            if time.monotonic() > deadline:
                break
            if not receive(0.2):
                dead = {pid: p for pid, p in live.items() if p.exitcode is not None}
                if not dead:
                    continue
                drain()  # what they sent before exiting
                for pid, process in dead.items():
                    live.pop(pid, None)
                    if pid not in tally.reported:
                        died(pid, process.exitcode)
                while queued and not stop.is_set() and len(live) < count:
                    start()  # in the dead workers' places
    for process in live.values():
        process.kill()
        process.join()
    drain()
    return stop.is_set()


def _not_run(task: Task, tally: _Tally, interrupted: bool) -> TaskResult:
    """A result for a task no worker ran: the run was interrupted first, or no worker could
    start. The ledger does not have it yet."""
    if interrupted:
        kind, error = "Interrupted", "The run was interrupted before this interval."
    elif tally.failures:
        kind, error = tally.failures[0].error_kind, tally.failures[0].error
    else:
        kind, error = "Worker error", f"No worker ran {task.label}."
    return TaskResult(task, 0, error_kind=kind, error=error)


def _worker_died(task: Task, worker: int, code: int | None) -> TaskResult:
    return TaskResult(
        task,
        worker,
        error_kind="Worker error",
        error=f"The worker process {worker} exited (code {code}) while computing {task.label}.",
    )


def _worker_main(
    settings: RunSettings, secret_values: dict[Secret, str], inbox: Any, events: Any, stop: Any
) -> None:
    """The body of a worker process: take tasks from its inbox until None, then report.

    Ctrl-C is the parent's to handle: it sets `stop`, which ends this worker's waits too.
    SIGTERM (the parent's second signal, or a scheduler) cancels the interval in progress.
    A worker whose parent died stops at once, writes nothing more, and exits within
    `_CANCEL_SECONDS` whatever it was doing. The process ends with os._exit, so a call stuck
    on a thread cannot keep it alive.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    workers: list[Worker] = []
    orphaned = threading.Event()

    def cancel(*_: object) -> None:
        orphaned.set()  # stopped for good: take no more tasks
        for worker in workers:
            worker.cancel()

    signal.signal(signal.SIGTERM, cancel)
    parent = multiprocessing.parent_process()

    def watch() -> None:
        """Pass the parent's stop on to the worker's waits; act on the parent's death."""
        assert parent is not None  # a spawned process has one
        while not orphaned.is_set():
            if stop.is_set():
                for worker in workers:
                    worker.stop()
            if multiprocessing.connection.wait([parent.sentinel], timeout=_PARENT_CHECK_SECONDS):
                cancel()
                threading.Timer(_CANCEL_SECONDS, os._exit, (1,)).start()
                return

    threading.Thread(target=watch, name="rivulet-watch", daemon=True).start()
    try:
        serve(
            settings,
            secret_values,
            inbox.get,
            events.send,
            lambda: stop.is_set() or orphaned.is_set(),
            workers.append,
        )
    finally:
        events.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
