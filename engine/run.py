"""The library entry point for a backfill: plan, check, execute, summarize."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import SettingsError
from engine.execute.local import Event, LocalExecutor
from engine.plan.environments import check_environments
from engine.plan.job import load_job
from engine.plan.secrets import resolve_secrets
from engine.plan.tasks import Task, plan_tasks
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

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

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
            "resource_builds_by_worker": {str(w.worker): w.builds for w in self.workers},
            "resource_teardowns_by_worker": {str(w.worker): w.teardowns for w in self.workers},
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
    on_event: Callable[[Event | RunPlanned], None] = lambda event: None,
) -> RunSummary:
    """Materialize every interval of the job's feature views in [start, end) to Parquet.

    Everything that can be checked before work starts is (the job imports, the feature views
    exist, environments are installed, every secret has a value); such problems raise a
    RivuletError. Failures of single intervals do not raise: they are in the summary.

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
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    on_event(RunPlanned(loaded.name, run_id, tuple(tasks), tuple(notes)))
    settings = RunSettings(str(loaded.path), str(Path(output).resolve()), run_id)
    results, reports = LocalExecutor(workers).run(tasks, settings, secret_values, on_event)
    return RunSummary(
        loaded.name, run_id, Path(output), results, reports, time.perf_counter() - began, notes
    )
