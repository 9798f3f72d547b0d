"""A thread pool whose threads never keep the process alive.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits, so one
call stuck forever (a socket with no timeout, a deadlocked library) hangs the exit of the
whole run, whatever signals it gets. Rivulet abandons such a call once its timeout passes,
and runs calls on daemon threads, which the exit does not wait for.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_STOP = None


class DaemonThreads(Executor):
    """An Executor of at most `max_workers` daemon threads, started as work arrives.

    Example:
        threads = DaemonThreads(8, "rivulet-call")
        await loop.run_in_executor(threads, fetch, url)
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self._most = max_workers
        self._name = name
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot submit to a DaemonThreads pool after shutdown")
            self._work.put((future, fn, args, kwargs))
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._most:
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; idle threads end. With `wait`, wait for the running calls."""
        with self._lock:
            self._shut = True
            if cancel_futures:
                while True:
                    try:
                        item = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        item[0].cancel()
            for _ in self._threads:
                self._work.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()

    def _serve(self) -> None:
        while (item := self._work.get()) is not _STOP:
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)
            del item, future  # drop the result before waiting for more work
            with self._lock:
                self._idle += 1
