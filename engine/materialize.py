"""The library's entry points: backfill a range, run what is due, plan without running."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from engine.define.feature_views import BatchFeatureView
from engine.define.schedule import as_utc
from engine.errors import SettingsError, StoreError
from engine.execute.local import LocalExecutor
from engine.execute.protocol import Event, Executor, WorkerExited
from engine.plan.environments import check_environments, requirements
from engine.plan.intervals import Windows, complete_before, due_windows, not_due_note, split_due
from engine.plan.job import Job, load_job
from engine.plan.limiter import check_limiter
from engine.plan.probe import probe_sources
from engine.plan.rates import check_rate_overrides, worker_rates
from engine.plan.secrets import resolve_secrets, short_secret_notes
from engine.plan.states import PlannedInterval, plan_intervals
from engine.plan.tasks import Task
from engine.publish import Publisher
from engine.store.ledger import Ledger
from engine.store.lock import output_lock
from engine.store.parquet import committed_files
from engine.store.reconcile import reconcile
from engine.summary import RunPlanned, RunSummary
from engine.work.worker import RunSettings, TaskResult

OnEvent = Callable[[Event | RunPlanned], None]


@dataclass(frozen=True)
class RunRequest:
    """What one run is asked to do: `backfill` and `run_due` each build one."""

    job: Job
    views: list[BatchFeatureView]
    windows_for: Callable[[Ledger], tuple[Windows, list[str]]]  # the intervals, once locked
    command: str
    output: Path
    workers: int = 1
    secrets_file: str | Path | None = None
    rate_limits: Mapping[str, float] = field(default_factory=dict)
    overwrite: bool = False
    allow_stale: bool = False
    on_event: OnEvent = lambda event: None
    executor: Executor | None = None
    limiter: str | None = None
    online_store: str | None = None


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
    now: datetime | None = None,
    executor: Executor | None = None,
    limiter: str | None = None,
    online_store: str | None = None,
) -> RunSummary:
    """Materialize every interval of the job's feature views in [start, end) to Parquet.

    Only intervals that are due at `now` (default: the clock) are computed: those that have
    ended, plus their source's `data_delay`; the rest are left out with a note, for a later
    run. Committed intervals are skipped (so a rerun resumes) unless `overwrite`; intervals
    committed by a different definition stop the run unless `overwrite` or `allow_stale`.
    Everything that can be checked before work starts is (the job imports, the views exist,
    environments are installed, every secret has a value): such problems raise a
    RivuletError. Failures of single intervals do not raise: they are in the summary.
    `rate_limits` overrides the requests per second of named resource providers; `executor`
    runs the tasks (default: a LocalExecutor of `workers` processes). `limiter`
    (redis://HOST:PORT/DB) makes each rate limit one bucket shared by every worker of every
    run; without it each worker keeps to its share. Views with `online=True` also publish
    each interval to `online_store` (redis://HOST:PORT/DB; default the SQLite file beside
    the store).

    Example:
        summary = backfill("jobs/embeddings.py", datetime(2024, 10, 26), datetime(2024, 11, 9))
        assert summary.ok, summary.failed
    """
    loaded = load_job(job)
    views, notes = loaded.materialized(feature_views)
    windows, window_notes = due_windows(views, start, end, now)
    return materialize(
        RunRequest(
            loaded, views, lambda ledger: (windows, notes + window_notes), "backfill",
            Path(output), workers, secrets_file, rate_limits or {}, overwrite, allow_stale,
            on_event, executor, limiter, online_store,
        )
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
    now: datetime | None = None,
    executor: Executor | None = None,
    limiter: str | None = None,
    online_store: str | None = None,
) -> RunSummary:
    """The scheduled run: every complete interval after the last committed one (or from
    `feature_start_time`) up to `until` (default now), plus earlier ones that failed or lost
    their file. An interval not yet due at `now` (still open, or within its source's
    `data_delay`) is left for a later run, so running twice in a row does nothing the second
    time; a changed definition stops it as in `backfill`.

    Example:
        summary = run_due("jobs/embeddings.py")  # from cron, hourly or daily
    """
    loaded = load_job(job)
    views, load_notes = loaded.materialized(feature_views)
    now = as_utc(now or datetime.now(UTC))
    until = as_utc(until or now)

    def due(ledger: Ledger) -> tuple[Windows, list[str]]:
        """Every due interval from the first one ever recorded (or feature_start_time): the
        committed ones are skipped (and checked for a changed definition), so this is the
        new intervals, plus any earlier one that failed or whose file was lost."""
        windows, notes = {}, list(load_notes)
        if until > now:
            notes.append(
                f"--until {until:%Y-%m-%d %H:%M} is later than now: intervals that have not "
                f"ended were left out; a later run computes them."
            )
        for view in views:
            recorded = [e.interval_start for e in ledger.entries(view.name)]
            since = min(recorded, default=view.feature_start_time)
            ended = complete_before(
                view.feature_start_time, view.batch_schedule, since, min(until, now)
            )
            windows[view.name], waiting = split_due(ended, view.data_delay, now)
            if waiting:
                notes.append(not_due_note(view.name, view.data_delay, waiting))
        return windows, notes

    return materialize(
        RunRequest(
            loaded, views, due, "run", Path(output), workers, secrets_file, rate_limits or {},
            False, allow_stale, on_event, executor, limiter, online_store,
        )
    )  # fmt: skip


def plan(
    job: str | Path,
    start: datetime,
    end: datetime,
    *,
    output: str | Path = "offline_store",
    feature_views: Sequence[str] = (),
    overwrite: bool = False,
    now: datetime | None = None,
) -> tuple[list[PlannedInterval], list[str]]:
    """Each interval in [start, end) with its state and whether a backfill would compute it,
    plus notes on how the range was read. Writes nothing.

    Example:
        planned, notes = plan("jobs/embeddings.py", datetime(2024, 10, 26), datetime(2024, 11, 9))
    """
    views, notes = load_job(job).materialized(feature_views)
    windows, window_notes = due_windows(views, start, end, now)
    planned = plan_intervals(output, views, windows, overwrite=overwrite, allow_stale=True)
    return planned, notes + window_notes


def materialize(request: RunRequest) -> RunSummary:
    """Check, lock the store, reconcile, plan, execute, record: the body of every run."""
    began = time.perf_counter()
    loaded, views, output, workers = request.job, request.views, request.output, request.workers
    if workers < 1:
        raise SettingsError(f"--workers must be at least 1, not {workers}.")
    providers = {p.name: p for view in views for _, p in view.resource_providers}
    check_rate_overrides(providers, request.rate_limits)
    notes = check_environments(views, loaded.environments)
    executor = request.executor
    if executor is None:
        cores = os.cpu_count() or 1
        if workers > cores:
            notes.append(
                f"--workers {workers} was capped at {cores}, the machine's cores: workers are "
                f"processes for CPU work, and each already makes its calls concurrently."
            )
        executor = LocalExecutor(min(workers, cores))
    if request.limiter:
        check_limiter(request.limiter)
    secret_values = resolve_secrets(views, request.secrets_file)
    notes += short_secret_notes(secret_values)
    probe_sources(views)
    # Every online view of the job, so a run of some views still repairs the others.
    publisher = Publisher(request.online_store, loaded.name, output, loaded.materialized()[0])
    with output_lock(output), contextlib.closing(publisher):
        ledger = Ledger(output)
        notes += reconcile(output, views, ledger)
        notes += publisher.repair(ledger)
        windows, planning_notes = request.windows_for(ledger)
        notes = planning_notes + notes
        planned = plan_intervals(
            output, views, windows, overwrite=request.overwrite, allow_stale=request.allow_stale
        )
        tasks = [p.task for p in planned if p.compute]
        sharing = 1 if request.limiter else min(executor.workers, max(len(tasks), 1))
        rates = worker_rates(views, request.rate_limits, sharing)
        run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        skipped = len(planned) - len(tasks)
        request.on_event(RunPlanned(loaded.name, run_id, tuple(tasks), tuple(notes), skipped))
        ledger.start_run(run_id, loaded.name, request.command)
        settings = RunSettings(
            str(loaded.path), str(output.resolve()), run_id, rates,
            requirements(views, loaded.environments), request.limiter,
        )  # fmt: skip

        def recover(task: Task) -> TaskResult | None:
            """The result of a task whose worker died after renaming its file into place."""
            for file in committed_files(output, task.feature_view):
                if file.start == task.start and file.run_id == run_id:
                    return TaskResult(task, 0, file.rows, 0.0, str(file.path), file.fingerprint)
            return None

        def on_executor_event(event: Event) -> None:
            if isinstance(event, TaskResult):
                record(ledger, run_id, event)
                if event.ok and event.path is not None:
                    try:
                        publisher.publish(event.task.feature_view, event.task.start, run_id)
                    except StoreError as lost:  # committed offline: the next run publishes it
                        notes.append(f"{lost} The next run publishes what it missed.")
            elif isinstance(event, WorkerExited):
                notes.append(event.note)
            request.on_event(event)

        outcome = executor.execute(tasks, settings, secret_values, on_executor_event, recover)
        summary = RunSummary(
            loaded.name, run_id, output, outcome.results, outcome.reports,
            time.perf_counter() - began, notes, outcome.interrupted, skipped,
        )  # fmt: skip
        ended = "interrupted" if summary.interrupted else "succeeded" if summary.ok else "failed"
        rows = sum(summary.rows_by_view.values())
        ledger.finish_run(run_id, ended, len(summary.results), len(summary.failed), rows)
        ledger.close()
    return summary


def record(ledger: Ledger, run_id: str, result: TaskResult) -> None:
    """Record a task's outcome in the ledger: the driver alone writes it, as results arrive.
    An interrupted interval is just not done."""
    task = result.task
    if result.ok and result.path is not None:
        ledger.commit(task.feature_view, task.start, task.end, result.rows,
                      result.fingerprint or "", run_id, result.started_at)  # fmt: skip
    elif result.error_kind != "Interrupted":
        ledger.fail(task.feature_view, task.start, task.end, run_id,
                    f"{result.error_kind}: {result.error}", result.started_at)  # fmt: skip
