"""Calls that adapt to a rate-limited API: AIMD on the 429s of one CallSpec's calls on one worker.

Until the first 429 the gate only counts starts. A 429 cuts the calls allowed in flight and
the rate of starts (multiplicative decrease); from then on every attempt waits for a place
and is paced to the rate, and each success grows both back a little (additive increase).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

from aiolimiter import AsyncLimiter

from engine.runtime.stats import Adapted, CallStats
from engine.runtime.stopping import Stopper
from engine.runtime.transient import transient_cause

CUT = 0.5  # a 429 multiplies the calls in flight and the rate by this
GROWTH = 0.05  # a second of successes adds this share of the rate last cut from
LOWEST_RATE = 1.0  # calls per second: the rate is never cut below it
WINDOW = 1.0  # seconds: the first cut halves the rate of starts seen over about the last one
SHORTEST_WINDOW = 0.01  # seconds: a run younger than this measures its starts over it
MARK_EVERY = 32  # starts between readings of the clock, until the first 429
PACE_BURST = 0.05  # seconds of the rate that may start at once after a pause


class AdaptiveGate:
    """The AIMD state of one Caller's calls (one CallSpec on one worker), driven by its 429s.

    `start()` and `end()` are the policy, timed by `clock`; `attempt()` wraps one attempt in
    them and, once a 429 was seen, makes it wait for a place and for its turn at the rate.
    A 429 from an attempt started after the last cut (so one cut per window of calls in
    flight) multiplies the limit and the rate by CUT; the first cut starts from the rate of
    starts over about the last WINDOW. Each paced success adds 1/limit to the limit (one per
    window of calls, up to `concurrency`) and GROWTH * ceiling / rate to the rate,
    the ceiling being the rate last cut from: kept busy, the rate climbs back by GROWTH of
    the ceiling a second. What it learnt goes to `stats.adapted[name]`.
    """

    def __init__(
        self,
        name: str,
        concurrency: int,
        stats: CallStats,
        stopper: Stopper | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._most = concurrency
        self._stats = stats
        self._stopper = stopper or Stopper()
        self._clock = clock
        self.limit: float = concurrency  # calls allowed in flight, enforced once paced
        self.rate: float | None = None  # calls per second started, once a 429 was seen
        self.in_flight = 0  # paced attempts between start() and end()
        self._ceiling = 0.0  # the rate last cut from
        self._cuts = 0
        self._started = 0  # calls started before the first 429
        self._mark_at = 0  # when `_started` reaches it, the clock is read
        self._marks: deque[tuple[float, int]] = deque()  # (time, _started) of ~ a WINDOW
        self._unpaced = _Unpaced(self)
        self._learnt = Adapted()
        self._ok = 0  # successes since the first 429
        self._busy = 0.0  # seconds with paced calls in flight, but for the current stretch
        self._busy_from = 0.0
        self._freed = asyncio.Event()
        self._pacing = asyncio.Lock()  # one start at a time takes its share of the rate
        self._pacer = AsyncLimiter(PACE_BURST, PACE_BURST)  # drains one second per second

    @property
    def paced(self) -> bool:
        """Whether a 429 was seen: from then on every attempt goes through the gate."""
        return self.rate is not None

    def attempt(self) -> _Unpaced | _Paced:
        """`async with gate.attempt():` around one attempt of a call."""
        return self._unpaced if self.rate is None else _Paced(self)

    def start(self, calls: int = 1) -> int:
        """Note `calls` starting now; the number of cuts so far, to hand to `end()`.

        Before the first 429 starts are only counted, for the first cut's rate (a chunk of
        rows counts as several), reading the clock every MARK_EVERY of them; after it each
        is one call in flight.
        """
        if self.rate is None:
            if self._started >= self._mark_at:
                self._mark()
            self._started += calls
            return 0
        now = self._clock()
        if self.in_flight == 0:
            self._busy_from = now
        self.in_flight += 1
        return self._cuts

    def end(self, epoch: int, error: BaseException | None) -> None:
        """A call that `start()` gave `epoch` ended, with `error` or None: a 429 from a call
        started since the last cut cuts; a paced success grows the limit and the rate."""
        if not epoch and error is None:
            return
        now = self._clock()
        if error is not None and epoch == self._cuts and transient_cause(error) == "429":
            self._cut(now)
        if not epoch:
            return
        self.in_flight -= 1
        if self.in_flight == 0:
            self._busy += now - self._busy_from
        self._freed.set()
        if error is None:
            self._grow(now)

    def _mark(self) -> None:
        """Note the time and the starts so far, keeping the newest mark a WINDOW old."""
        now, marks = self._clock(), self._marks
        marks.append((now, self._started))
        while len(marks) > 1 and marks[1][0] <= now - WINDOW:
            marks.popleft()
        self._mark_at = self._started + MARK_EVERY

    def _cut(self, now: float) -> None:
        if self.rate is None:
            then, started = self._marks[0]
            seconds = max(now - then, SHORTEST_WINDOW)
            self._ceiling = (self._started - started) / seconds
            self._marks.clear()
            self._stats.adapted[self._name] = self._learnt
        else:
            self._ceiling = self.rate
        self.rate = max(LOWEST_RATE, self._ceiling * CUT)
        self.limit = max(1.0, self.limit * CUT)
        self._cuts += 1
        learnt = self._learnt
        learnt.lowest = min(learnt.lowest, self.rate) if learnt.cuts else self.rate
        learnt.final = self.rate
        learnt.cuts += 1

    def _grow(self, now: float) -> None:
        assert self.rate is not None
        self.rate += GROWTH * self._ceiling / self.rate
        self.limit = min(float(self._most), self.limit + 1 / self.limit)
        self._ok += 1
        busy = self._busy + (now - self._busy_from if self.in_flight else 0.0)
        self._learnt.final = self.rate
        self._learnt.rate = self._ok / busy if busy > 0 else 0.0

    async def _admit(self) -> int:
        """Once paced: wait for a place in flight, start, then wait for the start's turn at
        the rate; `start()`'s epoch. Stopping the run ends the waits."""
        async with self._stopper.waiting():
            while self.in_flight + 1 > self.limit:
                self._freed.clear()
                await self._freed.wait()
            epoch = self.start()
            try:
                async with self._pacing:  # in turn, each at the rate of its turn
                    assert self.rate is not None
                    share = 1 / self.rate
                    while share > 0:  # aiolimiter takes at most its capacity at once
                        piece = min(share, PACE_BURST)
                        await self._pacer.acquire(piece)
                        share -= piece
            except BaseException as exc:
                self.end(epoch, exc)
                raise
        return epoch


class _Unpaced:
    """An attempt before the first 429: its start counted, its error (if any) looked at."""

    __slots__ = ("_gate",)

    def __init__(self, gate: AdaptiveGate) -> None:
        self._gate = gate

    async def __aenter__(self) -> None:
        self._gate.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._gate.end(0, exc)


class _Paced:
    """An attempt once a 429 was seen: it waits for a place and its turn at the rate."""

    __slots__ = ("_epoch", "_gate")

    def __init__(self, gate: AdaptiveGate) -> None:
        self._gate = gate
        self._epoch = 0

    async def __aenter__(self) -> None:
        self._epoch = await self._gate._admit()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._gate.end(self._epoch, exc)
