"""What a run reports: the plan it announces first, and the summary it ends with."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.plan.tasks import Task
from engine.runtime.stats import CallStats
from engine.work.worker import TaskResult, WorkerReport


@dataclass(frozen=True)
class RunPlanned:
    """The first event of a run: what it will do."""

    job: str
    run_id: str
    tasks: tuple[Task, ...]
    notes: tuple[str, ...]
    skipped: int = 0


@dataclass
class RunSummary:
    """What a run did: per-task results, per-worker resource counts, wall time."""

    job: str
    run_id: str
    output: Path
    results: list[TaskResult]
    workers: list[WorkerReport]
    seconds: float
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    skipped: int = 0

    @property
    def stats(self) -> CallStats:
        """Call and resource counts summed over the workers."""
        return functools.reduce(CallStats.merge, (w.stats for w in self.workers), CallStats())

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(result.ok for result in self.results)

    @property
    def failed(self) -> list[TaskResult]:
        return [result for result in self.results if not result.ok]

    @property
    def rows_by_view(self) -> dict[str, int]:
        rows: Counter[str] = Counter()
        for result in self.results:
            rows[result.task.feature_view] += result.rows
        return dict(rows)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the summary."""
        stats = self.stats
        p50, p99 = stats.latency_quantile(0.5), stats.latency_quantile(0.99)
        return {
            "job": self.job,
            "run_id": self.run_id,
            "output": str(self.output),
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "intervals": len(self.results),
            "skipped_intervals": self.skipped,
            "failed_intervals": len(self.failed),
            "rows": sum(self.rows_by_view.values()),
            "rows_by_feature_view": self.rows_by_view,
            "interrupted": self.interrupted,
            "calls": stats.calls,
            "failed_calls": stats.failed_calls,
            "retries_by_cause": dict(stats.retries),
            "throttled_429": stats.throttled,
            # wall time during which a call waited for a token (the longest of any worker)
            "rate_limit_wait_seconds": round(stats.limiter_wait_seconds, 3),
            "adapted_to_429": {
                view: {
                    "calls_per_second": round(adapted.rate, 1),
                    "lowest_paced_per_second": round(adapted.lowest, 1),
                    "final_paced_per_second": round(adapted.final, 1),
                    "cuts": adapted.cuts,
                }
                for view, adapted in sorted(stats.adapted.items())
            },
            "call_latency_p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "call_latency_p99_ms": None if p99 is None else round(p99 * 1000, 3),
            "dead_lettered_rows": stats.dead_lettered,
            "resources": {
                "builds": dict(stats.builds),
                "rebuilds": dict(+stats.rebuilds),
                "teardowns": dict(stats.teardowns),
            },
            "resource_builds_by_worker": {
                str(w.worker): dict(w.stats.builds) for w in self.workers
            },
            "failures": [
                {
                    "feature_view": r.task.feature_view,
                    "interval_start": r.task.start.isoformat(),
                    "interval_end": r.task.end.isoformat(),
                    "kind": r.error_kind,
                    "error": r.error,
                }
                for r in self.failed
            ],
            "notes": self.notes,
        }
