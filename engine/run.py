"""The library entry point for a backfill: plan, check, execute, summarize."""

from __future__ import annotations

import functools
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.define.feature_views import BatchFeatureView
from engine.errors import SettingsError
from engine.execute.local import Event, LocalExecutor
from engine.plan.environments import check_environments
from engine.plan.job import load_job
from engine.plan.secrets import resolve_secrets
from engine.plan.tasks import Task, plan_tasks
from engine.work.stats import CallStats
from engine.work.worker import RunSettings, TaskResult, WorkerReport


@dataclass(frozen=True)
class RunPlanned:
    """The first event of a run: what it will do."""

    job: str
    run_id: str
    tasks: tuple[Task, ...]
    notes: tuple[str, ...]


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
            "failed_intervals": len(self.failed),
            "rows": sum(self.rows_by_view.values()),
            "rows_by_feature_view": self.rows_by_view,
            "interrupted": self.interrupted,
            "calls": stats.calls,
            "failed_calls": stats.failed_calls,
            "retries_by_cause": dict(stats.retries),
            "throttled_429": stats.throttled,
            "rate_limit_wait_seconds": round(stats.limiter_wait_seconds, 3),
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


def backfill(
    job: str | Path,
    start: datetime,
    end: datetime,
    *,
    output: str | Path = "offline_store",
    feature_views: Sequence[str] = (),
    workers: int = 1,
    secrets_file: str | Path | None = None,
    rate_limits: Mapping[str, float] | None = None,
    on_event: Callable[[Event | RunPlanned], None] = lambda event: None,
) -> RunSummary:
    """Materialize every interval of the job's feature views in [start, end) to Parquet.

    Everything that can be checked before work starts is (the job imports, the feature views
    exist, environments are installed, every secret has a value); such problems raise a
    RivuletError. Failures of single intervals do not raise: they are in the summary.
    `rate_limits` overrides the requests per second of named resource providers.

    Example:
        summary = backfill("jobs/embeddings.py", datetime(2024, 10, 26), datetime(2024, 11, 9))
        assert summary.ok, summary.failed
    """
    began = time.perf_counter()
    if workers < 1:
        raise SettingsError(f"--workers must be at least 1, not {workers}.")
    loaded = load_job(job)
    views = loaded.select(feature_views)
    notes = check_environments(views, loaded.environments)
    secret_values = resolve_secrets(views, secrets_file)
    tasks = plan_tasks(views, start, end)
    rates = worker_rates(views, rate_limits or {}, min(workers, max(len(tasks), 1)))
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    on_event(RunPlanned(loaded.name, run_id, tuple(tasks), tuple(notes)))
    settings = RunSettings(str(loaded.path), str(Path(output).resolve()), run_id, rates)
    executor = LocalExecutor(workers)
    results, reports, interrupted = executor.run(tasks, settings, secret_values, on_event)
    seconds = time.perf_counter() - began
    return RunSummary(
        loaded.name, run_id, Path(output), results, reports, seconds, notes, interrupted
    )


def worker_rates(
    views: Sequence[BatchFeatureView], overrides: Mapping[str, float], workers: int
) -> dict[str, tuple[float, float]]:
    """Each rate-limited provider's (requests per second, burst) for one of `workers` workers,
    so that together they keep to the run's limit. Overrides name providers by their name."""
    providers = {p.name: p for view in views for _, p in view.resource_providers}
    for name, rate in overrides.items():
        if name not in providers:
            raise SettingsError(
                f"--rate-limit names resource provider '{name}', which no selected feature view "
                f"uses; they use: {', '.join(sorted(providers)) or 'none'}."
            )
        if not rate > 0:
            raise SettingsError(f"--rate-limit {name}={rate} must be a positive rate.")
    rates = {}
    for name, provider in providers.items():
        declared = provider.rate_limit
        rate = overrides.get(name, declared.requests_per_second if declared else None)
        if rate is None:
            continue
        burst = declared.burst if declared else max(1, round(rate / 10))
        rates[name] = (rate / workers, max(burst / workers, 1.0))
    return rates
