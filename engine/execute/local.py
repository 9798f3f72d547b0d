"""The local executor: one worker in this process, or several started with `spawn`; both
host the worker loop `serve()` of engine.execute.protocol."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.define.secrets import Secret
from engine.execute.driving import CANCEL_SECONDS, Tally, drive, stop_on_signals
from engine.execute.protocol import (
    Event,
    Outcome,
    Recover,
    RunSettings,
    Stopping,
    Task,
    serve,
)
from engine.work.worker import Worker

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
        whose spawned worker dies is retried on a fresh worker, up to `TRIES` in all.
        """
        if not tasks:
            return Outcome([], [], False)
        count = min(self.workers, len(tasks))
        tally = Tally(on_event)
        if count == 1:
            interrupted = _run_here(tasks, settings, secret_values, tally)
        else:
            pool = _SpawnedPool(settings, secret_values)
            interrupted = drive(pool, count, tasks, tally, recover, "worker process")
        return tally.outcome(tasks, interrupted)


def _run_here(
    tasks: Sequence[Task], settings: RunSettings, secret_values: Mapping[Secret, str], tally: Tally
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

    with stop_on_signals(lambda: on_signal(False), lambda: on_signal(True)):
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


class _SpawnedPool:
    """Worker processes started with `spawn`, as `drive()` uses them (a `Pool`).

    Each worker has an inbox and an event pipe of its own: a worker killed mid-send cannot
    block the others, as it could holding a shared queue's lock. Stopping sets an event
    every worker watches; cancelling sends SIGTERM (the worker cancels its interval and
    tears down); closing kills what is left.
    """

    def __init__(self, settings: RunSettings, secret_values: Mapping[Secret, str]) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._settings = settings
        self._secret_values = dict(secret_values)
        self._stop = self._context.Event()
        self._pipes: dict[Any, int] = {}  # receiving end: pid
        self._processes: dict[int, Any] = {}  # pid: process, until it ended or retired
        self._inboxes: dict[int, Any] = {}

    def start(self) -> int:
        inbox = self._context.Queue()
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main,
            args=(self._settings, self._secret_values, inbox, sender, self._stop),
            name=f"rivulet-worker-{len(self._inboxes)}",
            daemon=True,
        )
        process.start()
        sender.close()  # the worker's end: EOF here once the worker is gone
        self._pipes[receiver] = process.pid
        self._processes[process.pid] = process
        self._inboxes[process.pid] = inbox
        return process.pid

    def give(self, worker: int, task: Task | None) -> None:
        self._inboxes[worker].put(task)

    def receive(self, timeout: float) -> list[Event]:
        events = []
        for receiver in multiprocessing.connection.wait(list(self._pipes), timeout):
            try:
                events.append(receiver.recv())
            except (EOFError, OSError):  # the worker is gone, and so is its end
                del self._pipes[receiver]
        return events

    def exited(self) -> dict[int, int | None]:
        ended = {pid: p.exitcode for pid, p in self._processes.items() if p.exitcode is not None}
        for pid in ended:
            del self._processes[pid]
        return ended

    def alive(self, worker: int) -> bool:
        process = self._processes.get(worker)
        return process is not None and process.exitcode is None

    def stop(self) -> None:
        self._stop.set()

    def cancel(self) -> None:
        for process in self._processes.values():
            process.terminate()

    def retire(self, worker: int) -> None:
        process = self._processes.pop(worker, None)
        if process is not None:
            process.join(CANCEL_SECONDS)
            if process.is_alive():
                process.kill()

    def close(self) -> None:
        for process in self._processes.values():
            process.kill()
            process.join()


def _worker_main(
    settings: RunSettings, secret_values: dict[Secret, str], inbox: Any, events: Any, stop: Any
) -> None:
    """The body of a worker process: take tasks from its inbox until None, then report.

    Ctrl-C is the parent's to handle: it sets `stop`, which ends this worker's waits too.
    SIGTERM (the parent's second signal, or a scheduler) cancels the interval in progress.
    A worker whose parent died stops at once, writes nothing more, and exits within
    `CANCEL_SECONDS` whatever it was doing. The process ends with os._exit, so a call stuck
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
                threading.Timer(CANCEL_SECONDS, os._exit, (1,)).start()
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
