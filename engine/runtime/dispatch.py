"""How a view's fast python-mode rows go to threads: rows per thread task, tasks at once.

A row that waits (on the network, a sleep, a C library that releases the GIL) gains from
more threads; a row of Python work only contends for the GIL with them. Which one a row is
shows in the share of its wall time that its own thread spent on the CPU (`thread_time`):
under 1% for an API call, near 100% for Python work run alone. Wall time alone misleads:
waiting for the GIL inflates it, so under load a fast row looked slow, more threads started,
and the guess fed on itself. The share can fall under load too (a thread waits its turn
for a core), so rows count as CPU work until they show otherwise: they start as CPU work,
stop being it only below LEAVE_CPU (an API call's share is far lower) once EVIDENCE_ROWS
rows were seen, and become it again above ENTER_CPU. A loaded machine can thus only keep
rows on fewer threads, never start more. Until the rows are known, chunks are sized by
wall time, so a slow call is not queued behind others on one thread.
"""

from __future__ import annotations

from collections.abc import Sequence

CHUNK_SECONDS = 0.002  # the work one thread task aims at
MOST_ROWS_PER_CHUNK = 512
CPU_CHUNKS_IN_FLIGHT = 4  # threads for Python work: a few hide hand-offs, more contend
ENTER_CPU = 0.3  # share of wall time on the CPU above which rows are CPU work
LEAVE_CPU = 0.05  # ... and below which they are waiting again
EVIDENCE_ROWS = 16  # rows seen before they may count as waiting: one row, descheduled
# for a time slice on a busy machine, looks like an API call
KEPT_PER_ROW = 0.8  # each moving average keeps 0.8 of itself per row observed


class Dispatch:
    """The dispatch policy of one view on one worker, fed what each thread task measured.

    Example:
        dispatch = Dispatch(concurrency=64)
        dispatch.observe(seconds=[4e-6] * 512, cpu=0.0019)
        dispatch.chunk_size, dispatch.in_flight  # (512, 2): CPU work, ramping up
    """

    def __init__(self, concurrency: int) -> None:
        self._most = concurrency
        self._wall: float | None = None  # mean wall seconds per row
        self._cpu = 0.0  # mean thread CPU seconds per row
        self._rows = 0  # rows observed
        self._ramp = 1  # tasks in flight allowed so far: doubles with each task done
        self.cpu_bound = True  # until rows show they wait

    def observe(self, seconds: Sequence[float], cpu: float) -> None:
        """Take what one thread task took: each row's wall seconds, and the thread's CPU
        seconds for them all. A row's wall time is its task's median row's: one row that
        lost a time slice (a loaded machine) must not make the task look like waiting."""
        rows = len(seconds)
        typical = sorted(seconds)[rows // 2]
        kept = 0.0 if self._wall is None else KEPT_PER_ROW**rows
        self._wall = kept * (self._wall or 0.0) + (1 - kept) * max(typical, 1e-7)
        self._cpu = kept * self._cpu + (1 - kept) * cpu / rows
        self._rows += rows
        share = self._cpu / self._wall
        enough = self._rows >= EVIDENCE_ROWS
        self.cpu_bound = share >= (LEAVE_CPU if self.cpu_bound else ENTER_CPU) or not enough
        self._ramp = min(2 * self._ramp, self._most)

    @property
    def chunk_size(self) -> int:
        """Rows per thread task: about CHUNK_SECONDS of work (of CPU for Python work, of
        wall time for rows that wait, so a slow API call runs alone)."""
        if self._wall is None:
            return 1
        sure = self.cpu_bound and self._rows >= EVIDENCE_ROWS
        per_row = self._cpu if sure else self._wall  # until sure, a row may be a slow call
        return max(1, min(MOST_ROWS_PER_CHUNK, int(CHUNK_SECONDS / max(per_row, 1e-7))))

    @property
    def in_flight(self) -> int:
        """Thread tasks at once: a few for CPU work, the view's concurrency for rows that
        wait. It starts at one and doubles with each task done, so a slow first row (a cold
        connection) does not start a thread per row of the view."""
        most = min(CPU_CHUNKS_IN_FLIGHT, self._most) if self.cpu_bound else self._most
        return min(self._ramp, most)
