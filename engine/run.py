"""The library's entry points: backfill a range, run what is due, plan without running."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from engine.define.feature_views import BatchFeatureView
from engine.define.schedule import as_utc
from engine.errors import SettingsError
from engine.execute.local import Event, LocalExecutor
from engine.plan.environments import check_environments
from engine.plan.intervals import complete_before, range_notes, tile
from engine.plan.job import Job, load_job
from engine.plan.secrets import resolve_secrets
from engine.plan.states import PlannedInterval, plan_intervals
from engine.record.ledger import Ledger
from engine.record.lock import output_lock
from engine.record.reconcile import reconcile
from engine.record.summary import RunPlanned, RunSummary
from engine.work.worker import RunSettings

Windows = dict[str, list[tuple[datetime, datetime]]]
OnEvent = Callable[[Event | RunPlanned], None]


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
    overwrite: bool = False,
    allow_stale: bool = False,
    on_event: OnEvent = lambda event: None,
) -> RunSummary:
    """Materialize every interval of the job's feature views in [start, end) to Parquet.

    Committed intervals are skipped (so a rerun resumes) unless `overwrite`; intervals
    committed by a different definition stop the run unless `overwrite` or `allow_stale`.
    Everything that can be checked before work starts is (the job imports, the views exist,
    environments are installed, every secret has a value): such problems raise a
    RivuletError. Failures of single intervals do not raise: they are in the summary.
    `rate_limits` overrides the requests per second of named resource providers.

    Example:
        summary = backfill("jobs/embeddings.py", datetime(2024, 10, 26), datetime(2024, 11, 9))
        assert summary.ok, summary.failed
    """
    loaded, views = _load(job, feature_views)
    windows, notes = _windows(views, start, end)
    return _materialize(
        loaded, views, lambda ledger: windows, "backfill", output, workers, secrets_file,
        rate_limits, overwrite, allow_stale, notes, on_event,
    )  # fmt: skip


def run_due(
    job: str | Path,
    until: datetime | None = None,
    *,
    output: str | Path = "offline_store",
    feature_views: Sequence[str] = (),
    workers: int = 1,
    secrets_file: str | Path | None = None,
    rate_limits: Mapping[str, float] | None = None,
    allow_stale: bool = False,
    on_event: OnEvent = lambda event: None,
) -> RunSummary:
    """The scheduled run: every complete interval after the last committed one (or from
    `feature_start_time`) up to `until` (default now), plus earlier ones that failed or lost
    their file. An interval still open is left for a later run, so running twice in a row
    does nothing the second time; a changed definition stops it as in `backfill`.

    Example:
        summary = run_due("jobs/embeddings.py")  # from cron, hourly or daily
    """
    loaded, views = _load(job, feature_views)
    until = as_utc(until or datetime.now(UTC))

    def due(ledger: Ledger) -> Windows:
        """Every complete interval from the first one ever recorded (or feature_start_time):
        the committed ones are skipped (and checked for a changed definition), so this is
        the new intervals, plus any earlier one that failed or whose file was lost."""
        windows = {}
        for view in views:
            recorded = [e.interval_start for e in ledger.entries(view.name)]
            since = min(recorded, default=view.feature_start_time)
            windows[view.name] = complete_before(
                view.feature_start_time, view.batch_schedule, since, until
            )
        return windows

    return _materialize(
        loaded, views, due, "run", output, workers, secrets_file, rate_limits,
        False, allow_stale, [], on_event,
    )  # fmt: skip


def plan(
    job: str | Path,
    start: datetime,
    end: datetime,
    *,
    output: str | Path = "offline_store",
    feature_views: Sequence[str] = (),
    overwrite: bool = False,
) -> tuple[list[PlannedInterval], list[str]]:
    """Each interval in [start, end) with its state and whether a backfill would compute it,
    plus notes on how the range was read. Writes nothing.

    Example:
        planned, notes = plan("jobs/embeddings.py", datetime(2024, 10, 26), datetime(2024, 11, 9))
    """
    _, views = _load(job, feature_views)
    windows, notes = _windows(views, start, end)
    return plan_intervals(output, views, windows, overwrite=overwrite, allow_stale=True), notes


def _load(job: str | Path, feature_views: Sequence[str]) -> tuple[Job, list[BatchFeatureView]]:
    loaded = load_job(job)
    return loaded, loaded.select(feature_views)


def _windows(
    views: Sequence[BatchFeatureView], start: datetime, end: datetime
) -> tuple[Windows, list[str]]:
    """Each view's intervals over [start, end), and notes on clipping and widening."""
    windows, notes = {}, []
    for view in views:
        windows[view.name] = tile(view.feature_start_time, view.batch_schedule, start, end)
        notes += range_notes(view.name, view.feature_start_time, start, end, windows[view.name])
    return windows, notes


def _materialize(
    loaded: Job,
    views: list[BatchFeatureView],
    windows_for: Callable[[Ledger], Windows],
    command: str,
    output: str | Path,
    workers: int,
    secrets_file: str | Path | None,
    rate_limits: Mapping[str, float] | None,
    overwrite: bool,
    allow_stale: bool,
    notes: list[str],
    on_event: OnEvent,
) -> RunSummary:
    """Check, lock the store, reconcile, plan, execute, record: the body of every run."""
    began = time.perf_counter()
    if workers < 1:
        raise SettingsError(f"--workers must be at least 1, not {workers}.")
    notes = notes + check_environments(views, loaded.environments)
    secret_values = resolve_secrets(views, secrets_file)
    output = Path(output)
    with output_lock(output):
        ledger = Ledger(output)
        notes += reconcile(output, views, ledger)
        planned = plan_intervals(
            output, views, windows_for(ledger), overwrite=overwrite, allow_stale=allow_stale
        )
        tasks = [p.task for p in planned if p.run]
        rates = worker_rates(views, rate_limits or {}, min(workers, max(len(tasks), 1)))
        run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        skipped = len(planned) - len(tasks)
        on_event(RunPlanned(loaded.name, run_id, tuple(tasks), tuple(notes), skipped))
        ledger.start_run(run_id, loaded.name, command)
        settings = RunSettings(str(loaded.path), str(output.resolve()), run_id, rates)
        results, reports, interrupted = LocalExecutor(workers).run(
            tasks, settings, secret_values, on_event
        )
        summary = RunSummary(
            loaded.name, run_id, output, results, reports, time.perf_counter() - began,
            notes, interrupted, skipped,
        )  # fmt: skip
        outcome = "interrupted" if interrupted else "succeeded" if summary.ok else "failed"
        rows = sum(summary.rows_by_view.values())
        ledger.finish_run(run_id, outcome, len(results), len(summary.failed), rows)
        ledger.close()
    return summary


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
