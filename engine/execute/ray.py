"""The Ray executor: workers are Ray core actors, each hosting the worker loop `serve()`.

Each actor builds its resources once, lazily, shares them across views and micro-batches,
and tears them down when the run ends, as a local worker does. The driver (`drive()`, as
for spawned workers) hands each actor one task at a time and receives its events from a
streaming generator (`serve` yields them as they happen), so progress, the summary and
`--json` read the same as a local run. Actors write Parquet straight into the output
folder, which every node must see; the driver alone records commits in the ledger. An
actor that dies (killed, its node lost) is replaced by a new one and its task retried.

Ray is the `ray` extra, imported only here.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from engine.define.secrets import Secret
from engine.errors import SettingsError, one_line
from engine.execute.driving import Tally, drive
from engine.execute.protocol import Event, Outcome, Recover, RunSettings, Task, serve
from engine.work.worker import Worker

OBJECT_STORE_BYTES = 256 * 1024 * 1024  # a local Ray's object store: tasks and events only


class RayExecutor:
    """Runs tasks on `workers` Ray actors of `num_cpus` each (fractional: API-bound work
    needs little CPU), on the Ray at `address`, or on a local Ray started on demand (no
    dashboard, a small object store) when there is none. `runtime_env` is handed to every
    actor; on a cluster, the views' Environment requirements are its `pip` unless it names
    one (a local Ray's actors run in this Python environment, checked before the run).
    """

    def __init__(
        self,
        workers: int = 1,
        address: str | None = None,
        num_cpus: float = 0.5,
        runtime_env: Mapping[str, Any] | None = None,
    ) -> None:
        self.workers = workers
        self.address = address
        self.num_cpus = num_cpus
        self.runtime_env = dict(runtime_env or {})

    def execute(
        self,
        tasks: Sequence[Task],
        settings: RunSettings,
        secret_values: Mapping[Secret, str],
        on_event: Callable[[Event], None],
        recover: Recover = lambda task: None,
    ) -> Outcome:
        """Run every task, as the Executor protocol says (engine.execute.protocol)."""
        if not tasks:
            return Outcome([], [], False)
        ray = connect(self.address)
        tally = Tally(on_event)
        runtime_env = dict(self.runtime_env)
        if self.address is not None and settings.requirements:
            runtime_env.setdefault("pip", list(settings.requirements))
        pool = _ActorPool(ray, settings, secret_values, self.num_cpus, runtime_env)
        count = min(self.workers, len(tasks))
        interrupted = drive(pool, count, tasks, tally, recover, "Ray actor")
        return tally.outcome(tasks, interrupted)


def connect(address: str | None) -> Any:
    """The `ray` module, connected: to the cluster at `address`, to a Ray this process
    already started, or to a new local one sized to the machine."""
    try:
        import ray
    except ImportError:
        raise SettingsError(
            "--executor ray needs Ray: pip install 'rivulet[ray]' (it is not installed)."
        ) from None
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "configure_logging": True,
    }
    if address is None:
        options |= {"num_cpus": os.cpu_count(), "object_store_memory": OBJECT_STORE_BYTES}
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SettingsError(
            f"Rivulet could not join the Ray cluster at '{address}': {one_line(exc)}. "
            f"Check --ray-address (ray://HOST:10001 or HOST:6379)."
        ) from None
    return ray


class _ActorPool:
    """Ray actors as `drive()` uses them (a `Pool`): each one's events arrive on the
    streaming generator of its `serve` call; one that ends or dies is told apart by how
    that generator ends."""

    def __init__(
        self,
        ray: Any,
        settings: RunSettings,
        secret_values: Mapping[Secret, str],
        num_cpus: float,
        runtime_env: Mapping[str, Any],
    ) -> None:
        self._ray = ray
        self._actor = ray.remote(_RayWorker)
        self._options = {
            "num_cpus": num_cpus,
            "max_concurrency": 4,  # serve runs while give, stop and cancel arrive
            "runtime_env": dict(runtime_env) or None,
        }
        self._settings = settings
        self._secret_values = dict(secret_values)
        self._ids = itertools.count(1)
        self._handles: dict[int, Any] = {}
        self._streams: dict[Any, int] = {}  # each actor's serve() generator: its id
        self._ended: dict[int, int | None] = {}

    def start(self) -> int:
        worker = next(self._ids)
        name = f"rivulet-{self._settings.run_id}-{worker}"  # ray.get_actor(name) finds it
        actor = self._actor.options(name=name, **self._options)
        handle = actor.remote(self._settings, self._secret_values, worker)
        self._handles[worker] = handle
        self._streams[handle.serve.remote()] = worker
        return worker

    def give(self, worker: int, task: Task | None) -> None:
        self._handles[worker].give.remote(task)

    def receive(self, timeout: float) -> list[Event]:
        if not self._streams:
            return []
        streams = list(self._streams)
        ready, _ = self._ray.wait(streams, num_returns=1, timeout=timeout)
        if ready:  # and whatever else is ready by now
            ready, _ = self._ray.wait(streams, num_returns=len(streams), timeout=0)
        events = []
        for stream in ready:
            worker = self._streams[stream]
            try:
                events.append(self._ray.get(next(stream)))
            except StopIteration:  # serve() returned: the actor reported and is done
                self._end(stream, worker, 0)
            except Exception:  # the actor died (killed, out of memory, its node lost)
                self._end(stream, worker, None)
        return events

    def exited(self) -> dict[int, int | None]:
        ended, self._ended = self._ended, {}
        return ended

    def alive(self, worker: int) -> bool:
        return worker in self._handles and worker not in self._ended

    def stop(self) -> None:
        for handle in self._handles.values():
            handle.stop.remote()

    def cancel(self) -> None:
        for handle in self._handles.values():
            handle.cancel.remote()

    def retire(self, worker: int) -> None:
        handle = self._handles.pop(worker, None)
        if handle is not None:
            self._ray.kill(handle)  # its resources are torn down: it reported

    def close(self) -> None:
        for worker in list(self._handles):
            self.retire(worker)

    def _end(self, stream: Any, worker: int, code: int | None) -> None:
        del self._streams[stream]
        self._ended[worker] = code
        handle = self._handles.pop(worker, None)
        if handle is not None and code is None:
            self._ray.kill(handle)  # a restarting actor must not take a task again


class _RayWorker:
    """The body of one Ray actor: the worker loop on a thread, its events streamed back."""

    def __init__(self, settings: RunSettings, secret_values: dict, worker_id: int) -> None:
        self._settings = settings
        self._secret_values = secret_values
        self._id = worker_id
        self._inbox: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._workers: list[Worker] = []

    def give(self, task: Task | None) -> None:
        self._inbox.put(task)

    def stop(self) -> None:
        self._stopped.set()
        for worker in self._workers:
            worker.stop()

    def cancel(self) -> None:
        self._stopped.set()
        for worker in self._workers:
            worker.cancel()

    def serve(self) -> Iterator[Event]:
        """Run `serve()` until it returns, yielding each event it emits as it comes."""
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        done = threading.Event()

        def loop() -> None:
            try:
                serve(
                    self._settings, self._secret_values, self._inbox.get, events.put,
                    self._stopped.is_set, self._workers.append, self._id,
                )  # fmt: skip
            finally:
                done.set()

        threading.Thread(target=loop, name="rivulet-worker", daemon=True).start()
        while not (done.is_set() and events.empty()):
            try:
                event = events.get(timeout=0.1)
            except queue.Empty:
                continue
            yield event
