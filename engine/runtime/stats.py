"""Counters a worker keeps about its calls, summed over workers for the run summary."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

_BUCKETS_PER_DOUBLING = 16  # latency buckets ~4.4% wide


@dataclass
class Adapted:
    """How one view's calls adapted to 429s (engine.runtime.adaptive), in calls per second.

    `rate` is the rate of successful calls since the first 429 (over the time paced calls
    were in flight); `lowest` and `final` are the lowest and the last rate the calls were
    paced to. Summed over workers, as each worker keeps to its own share.
    """

    rate: float = 0.0
    lowest: float = 0.0
    final: float = 0.0
    cuts: int = 0

    def __add__(self, other: Adapted) -> Adapted:
        return Adapted(
            self.rate + other.rate,
            self.lowest + other.lowest,
            self.final + other.final,
            self.cuts + other.cuts,
        )


@dataclass
class CallStats:
    """Calls, retries by cause, 429s, rate-limiter waiting, latencies, resource lifecycle,
    and how the calls adapted to 429s."""

    calls: int = 0
    failed_calls: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    limiter_wait_seconds: float = 0.0
    dead_lettered: int = 0
    builds: Counter[str] = field(default_factory=Counter)
    rebuilds: Counter[str] = field(default_factory=Counter)
    teardowns: Counter[str] = field(default_factory=Counter)
    latency_buckets: Counter[int] = field(default_factory=Counter)
    adapted: dict[str, Adapted] = field(default_factory=dict)  # by view, once it saw a 429

    def record_latency(self, seconds: float) -> None:
        micros = max(seconds * 1e6, 1.0)
        self.latency_buckets[int(math.log2(micros) * _BUCKETS_PER_DOUBLING)] += 1

    def record_latencies(self, durations: list[float]) -> None:
        """record_latency for each duration, counted in one pass."""
        buckets, log2 = self.latency_buckets, math.log2
        for bucket in [int(log2(max(s * 1e6, 1.0)) * _BUCKETS_PER_DOUBLING) for s in durations]:
            buckets[bucket] += 1

    def latency_quantile(self, q: float) -> float | None:
        """The q-quantile of call latency in seconds (within one bucket), or None."""
        total = sum(self.latency_buckets.values())
        if not total:
            return None
        rank, seen = q * total, 0
        for bucket in sorted(self.latency_buckets):
            seen += self.latency_buckets[bucket]
            if seen >= rank:
                return 2 ** ((bucket + 0.5) / _BUCKETS_PER_DOUBLING) / 1e6
        return None

    def merge(self, other: CallStats) -> CallStats:
        """A new CallStats adding `other` to this one."""
        return CallStats(
            calls=self.calls + other.calls,
            failed_calls=self.failed_calls + other.failed_calls,
            retries=self.retries + other.retries,
            throttled=self.throttled + other.throttled,
            # Workers wait side by side: the run waited as long as its longest waiter.
            limiter_wait_seconds=max(self.limiter_wait_seconds, other.limiter_wait_seconds),
            dead_lettered=self.dead_lettered + other.dead_lettered,
            builds=self.builds + other.builds,
            rebuilds=self.rebuilds + other.rebuilds,
            teardowns=self.teardowns + other.teardowns,
            latency_buckets=self.latency_buckets + other.latency_buckets,
            adapted={
                view: self.adapted.get(view, Adapted()) + other.adapted.get(view, Adapted())
                for view in self.adapted | other.adapted
            },
        )
