"""The driver's side of a pool of workers, whatever they run in (spawned processes, Ray
actors): hand out tasks as workers ask, pass events on, replace workers that die, stop on
signals. Each executor brings a `Pool`, the transport to its workers.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from engine.execute.protocol import (
    Event,
    Outcome,
    Recover,
    Stopping,
    Task,
    TaskResult,
    TaskWanted,
    WorkerExited,
    WorkerFailed,
    WorkerReport,
)

GRACE_SECONDS = 30.0  # how long a stopped run waits for workers to tear down
CANCEL_SECONDS = 5.0  # after a second signal: how long before workers are killed
TRIES = 3  # workers a task is tried on when its worker dies under it


class Pool(Protocol):
    """Workers that each host `serve()`, known by the ids `start` gives them."""

    def start(self) -> int:
        """Start a worker; its id (the id its events carry)."""
        ...

    def give(self, worker: int, task: Task | None) -> None:
        """Hand the worker a task (its first as it starts, then one per TaskWanted), or
        None: no more work, tear down and report."""
        ...

    def receive(self, timeout: float) -> list[Event]:
        """The events workers sent within `timeout` seconds (none: an empty list)."""
        ...

    def exited(self) -> dict[int, int | None]:
        """The workers that ended since last asked, each with its exit code (None when
        unknown), once every event they sent has been received."""
        ...

    def alive(self, worker: int) -> bool: ...

    def stop(self) -> None:
        """Ask every worker to stop at its next row and tear down."""
        ...

    def cancel(self) -> None:
        """Ask every worker to abandon its interval now (calls in flight included)."""
        ...

    def retire(self, worker: int) -> None:
        """The worker sent its last word (its report): let it end."""
        ...

    def close(self) -> None:
        """End every worker still running."""
        ...


class Tally:
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

    def outcome(self, tasks: Sequence[Task], interrupted: bool) -> Outcome:
        """The executor's answer: a result for every task (those no worker ran get one
        saying why), in the tasks' order, and every worker's report."""
        for task in tasks:
            if task not in self.results:
                self.handle(self.not_run(task, interrupted))
        return Outcome([self.results[task] for task in tasks], self.reports, interrupted)

    def not_run(self, task: Task, interrupted: bool) -> TaskResult:
        """A result for a task no worker ran: the run was interrupted first, or no worker
        could start. The ledger does not have it yet."""
        if interrupted:
            kind, error = "Interrupted", "The run was interrupted before this interval."
        elif self.failures:
            kind, error = self.failures[0].error_kind, self.failures[0].error
        else:
            kind, error = "Worker error", f"No worker ran {task.label}."
        return TaskResult(task, 0, error_kind=kind, error=error)


def drive(
    pool: Pool, count: int, tasks: Sequence[Task], tally: Tally, recover: Recover, what: str
) -> bool:
    """Run the tasks on `count` workers of `pool`; return whether the run was interrupted.

    Each worker gets a task as it starts and then each time it asks (TaskWanted: when the
    tasks it runs have read their sources), or None when there is no more work, so the
    driver always knows which tasks a worker holds. The first SIGINT or SIGTERM stops the
    workers at their next row (they tear down and report, within `GRACE_SECONDS`); a
    second one cancels their intervals, and ends them `CANCEL_SECONDS` later. A worker
    that dies under tasks is replaced; each task is recovered (its file was already in
    place), retried on another worker, or failed after `TRIES` workers died under it. A
    retry runs alone (its worker gets nothing more until it ends): a task whose worker died
    running others too may not be the cause, and alone, only a task that is the cause dies
    again. `what` names a worker in messages ("worker process", "Ray actor").
    """
    queued = deque(tasks)
    live: set[int] = set()
    holding: dict[int, list[Task]] = {}  # the tasks each worker runs
    tries: Counter[Task] = Counter()
    alone: set[Task] = set()  # tasks to run alone: a worker died under them
    waiting: set[int] = set()  # workers that asked while they may take nothing
    done: set[int] = set()  # workers told there is no more work
    stopped = False

    def start() -> None:
        worker = pool.start()
        live.add(worker)
        holding[worker] = []
        give(worker)  # its first task, unasked

    def give(worker: int) -> None:
        """Answer the worker's ask: a task it may run beside those it holds, or None (no
        more work). A worker that runs a task alone, or asks for a task beside others while
        no more are queued than workers hold none (one that is starting, say), is answered
        once one of its tasks ends."""
        held = holding[worker]
        task = None if stopped else next((t for t in queued if not held or t not in alone), None)
        empty = sum(1 for w in live if w != worker and not holding[w] and w not in done)
        if not stopped and (
            alone.intersection(held) or (task is None and queued) or (held and len(queued) <= empty)
        ):
            waiting.add(worker)
            return
        if task is None:
            done.add(worker)
        else:
            queued.remove(task)
            held.append(task)
        pool.give(worker, task)

    def died(worker: int, code: int | None) -> None:
        """A worker ended without its report: recover, retry or fail the tasks it held."""
        for task in holding.pop(worker, []):
            if task not in tally.results and not stopped:
                lost(worker, code, task)

    def lost(worker: int, code: int | None, task: Task) -> None:
        result = recover(task)
        if result is not None:
            outcome = "committed"
        elif tries[task] + 1 < TRIES:
            tries[task] += 1
            alone.add(task)
            outcome = "retried"
            queued.appendleft(task)
        else:
            outcome = "failed"
            result = TaskResult(
                task,
                worker,
                error_kind="Worker error",
                error=f"The {what} {worker} exited (code {code}) while computing {task.label}.",
            )
        tally.handle(WorkerExited(worker, code, task, outcome, TRIES))
        if result is not None:
            tally.handle(result)

    def handle(event: Event) -> None:
        tally.handle(event)
        if isinstance(event, TaskWanted) and event.worker in live:
            if pool.alive(event.worker):  # a dead one's next task would be retried instead
                give(event.worker)
        elif isinstance(event, TaskResult) and event.task in holding.get(event.worker, ()):
            holding[event.worker].remove(event.task)
            if event.worker in waiting and pool.alive(event.worker):
                waiting.discard(event.worker)
                give(event.worker)
        elif isinstance(event, WorkerReport | WorkerFailed) and event.worker in live:
            live.discard(event.worker)  # its last word: it ends right after
            pool.retire(event.worker)

    def drain() -> None:
        """Handle the events already sent (by a worker that ended, say)."""
        while late := pool.receive(0.05):
            for event in late:
                handle(event)

    for _ in range(count):
        start()
    stopping, cancelled = threading.Event(), threading.Event()
    deadline = math.inf
    with stop_on_signals(stopping.set, cancelled.set):
        while live:
            if stopping.is_set() and not stopped:
                stopped = True
                pool.stop()  # workers abandon their interval, tear down, and report
                deadline = time.monotonic() + GRACE_SECONDS
                tally.handle(Stopping(cancel=False))
            if cancelled.is_set() and deadline > time.monotonic() + CANCEL_SECONDS:
                pool.cancel()
                deadline = time.monotonic() + CANCEL_SECONDS
                tally.handle(Stopping(cancel=True))
            if time.monotonic() > deadline:
                break
            if events := pool.receive(0.2):
                for event in events:
                    handle(event)
                continue
            ended = {w: code for w, code in pool.exited().items() if w in live}
            if not ended:
                continue
            drain()  # what they sent before they ended
            for worker, code in ended.items():
                live.discard(worker)
                if worker not in tally.reported:
                    died(worker, code)
            while queued and not stopped and len(live) < count:
                start()  # in the dead workers' places
    pool.close()
    drain()
    return stopped


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None], cancel: Callable[[], None]) -> Iterator[None]:
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
