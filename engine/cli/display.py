"""What the terminal shows: progress while a run goes, tables and errors after it."""

from __future__ import annotations

from collections import Counter, defaultdict
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.execute.protocol import RowsWritten, Stopping, WorkerExited
from engine.plan.job import Job
from engine.plan.states import PlannedInterval
from engine.reports import ViewStatus
from engine.store.ledger import RunRecord
from engine.summary import RunPlanned, RunSummary
from engine.work.worker import TaskResult

out = Console()
err = Console(stderr=True)


class RunProgress:
    """A progress bar over intervals, with rows written and rows per second."""

    def __init__(self, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=16),
            TextColumn(
                "{task.completed}/{task.total} intervals {task.fields[rows]:,} rows "
                "{task.fields[rate]:,.0f} rows/s {task.fields[calls]:,} calls "
                "{task.fields[retries]:,} retries {task.fields[throttle]:,.1f}s throttled"
            ),
            TimeElapsedColumn(),
            console=err,
            disable=not enabled,
        )
        self._bar: Any = None
        self._rows = 0
        self._workers: dict[int, RowsWritten] = {}  # each worker's latest running counts

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._progress.stop()

    def update(self, event: object) -> None:
        """Take one event of the run (engine.summary.RunPlanned and engine.execute.protocol)."""
        if isinstance(event, RunPlanned):
            for note in event.notes:
                err.print(f"[yellow]Note:[/] {note}")
            self._progress.start()  # only now: an error before planning prints alone
            self._bar = self._progress.add_task(
                event.job,
                total=len(event.tasks),
                rows=0,
                rate=0.0,
                calls=0,
                retries=0,
                throttle=0.0,
            )
            return
        if self._bar is None:
            return
        if isinstance(event, Stopping):
            err.print(
                "[yellow]Cancelling:[/] calls in flight are abandoned."
                if event.cancel
                else "[yellow]Stopping:[/] nothing new starts and calls in flight finish; "
                "Ctrl-C (or SIGTERM) again cancels them."
            )
        elif isinstance(event, WorkerExited):
            err.print(f"[yellow]Note:[/] {event.note}", highlight=False)
        elif isinstance(event, RowsWritten):
            self._rows += event.rows
            self._workers[event.worker] = event
        elif isinstance(event, TaskResult):
            self._progress.advance(self._bar)
        elapsed = self._progress.tasks[0].elapsed or 0.0
        rate = self._rows / elapsed if elapsed else 0.0
        latest = self._workers.values()
        self._progress.update(
            self._bar,
            rows=self._rows,
            rate=rate,
            calls=sum(w.calls for w in latest),
            retries=sum(w.retries for w in latest),
            throttle=sum(w.throttle_seconds for w in latest),
        )


def print_summary(summary: RunSummary) -> None:
    """Rows and failures per view, call counts, resource lifecycle per worker, wall time."""
    views = Table(title=f"Run {summary.run_id} of job '{summary.job}'")
    for column in ("feature view", "intervals", "failed", "rows"):
        views.add_column(column, justify="left" if column == "feature view" else "right")
    per_view: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for result in summary.results:
        counts = per_view[result.task.feature_view]
        counts[0] += 1
        counts[1] += not result.ok
        counts[2] += result.rows
    for name, (intervals, failed, rows) in per_view.items():
        views.add_row(name, str(intervals), str(failed), f"{rows:,}")
    out.print(views)
    stats = summary.stats
    if stats.calls:
        p50, p99 = stats.latency_quantile(0.5) or 0.0, stats.latency_quantile(0.99) or 0.0
        retries = ", ".join(f"{cause} {n}" for cause, n in sorted(stats.retries.items()))
        out.print(
            f"calls {stats.calls:,} (failed {stats.failed_calls:,}); retries {retries or 'none'}; "
            f"429s {stats.throttled:,}; waited on rate limits {stats.limiter_wait_seconds:.1f} s "
            f"of wall time; "
            f"latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
            f"dead-lettered rows {stats.dead_lettered:,}",
            highlight=False,
        )
    for view, adapted in sorted(stats.adapted.items()):
        out.print(
            f"the API throttled '{view}': calls adapted to ~{adapted.rate:,.0f}/s (paced down "
            f"to {adapted.lowest:,.0f}/s, {adapted.final:,.0f}/s at the end; "
            f"{adapted.cuts:,} cuts)",
            highlight=False,
        )
    resources = Table(title="Resources per worker")
    for column in ("worker", "provider", "builds", "rebuilds", "teardowns"):
        resources.add_column(column, justify="left" if column == "provider" else "right")
    for report in summary.workers:
        for provider, count in sorted(report.stats.builds.items()):
            resources.add_row(
                str(report.worker),
                provider,
                str(count),
                str(report.stats.rebuilds[provider]),
                str(report.stats.teardowns[provider]),
            )
    if resources.row_count:
        out.print(resources)
    if summary.interrupted:
        state = "[yellow]interrupted[/]"
    elif summary.ok:
        state = "[green]succeeded[/]"
    else:
        state = f"[red]{len(summary.failed)} interval(s) failed[/]"
    skipped = f"; {summary.skipped} interval(s) already committed" if summary.skipped else ""
    out.print(f"{state} in {summary.seconds:.1f} s{skipped}; output under {summary.output}/")


def print_failures(summary: RunSummary, debug: bool) -> None:
    """Each failed interval with its one-paragraph error (and traceback with --debug)."""
    not_started = [r for r in summary.failed if r.error_kind == "Interrupted" and not r.seconds]
    if not_started:  # one line, not one per interval: a long range may leave thousands
        first = min(r.task.start for r in not_started)
        err.print(
            f"Interrupted: {len(not_started):,} interval(s) from {first:%Y-%m-%d %H:%M} did not "
            f"start; a rerun computes them.",
            highlight=False,
        )
    for result in summary.failed:
        if result.error_kind == "Interrupted" and not result.seconds:
            continue
        # markup off: errors quote user data, which may contain [brackets].
        err.print(
            f"Failed {result.task.label}: {result.error_kind}: {result.error}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if debug and result.detail:
            err.print(result.detail, markup=False, highlight=False, soft_wrap=True)


def print_job(job: Job, notes: list[str]) -> None:
    """The job's feature views and what they need."""
    table = Table(title=f"Job '{job.name}' is valid")
    for column in ("feature view", "mode", "source", "schedule", "features", "resources"):
        table.add_column(column)
    for view in job.feature_views.values():
        table.add_row(
            view.name,
            view.mode,
            ", ".join(source.describe() for source in view.sources),
            str(view.batch_schedule),
            ", ".join(f"{f.name}: {f.dtype!r}" for f in view.features),
            ", ".join(f"{k} ({p.name})" for k, p in view.resource_providers) or "-",
        )
    for view in job.realtime_views.values():
        table.add_row(
            view.name,
            f"realtime {view.mode}",
            "request",
            "-",
            ", ".join(f"{f.name}: {f.dtype!r}" for f in view.features),
            ", ".join(f"{k} ({p.name})" for k, p in view.resource_providers) or "-",
        )
    out.print(table)
    for note in notes:
        err.print(f"[yellow]Note:[/] {note}")


def print_plan(planned: list[PlannedInterval], notes: list[str]) -> None:
    """One row per interval: view, interval, state, and whether a backfill computes it; a
    note for each interval whose file cannot be read."""
    for note in [*notes, *(item.note for item in planned if item.note)]:
        err.print(f"[yellow]Note:[/] {note}")
    table = Table(title="Plan")
    for column in ("feature view", "interval", "state", "backfill would"):
        table.add_column(column)
    colours = {
        "committed": "green",
        "stale": "yellow",
        "failed": "red",
        "missing": "white",
        "unreadable": "magenta",
    }
    for item in planned:
        state = f"[{colours[item.state]}]{item.state}[/]"
        action = "compute" if item.compute else "keep" if item.state == "committed" else "refuse"
        table.add_row(item.task.feature_view, item.task.label.split(" ", 1)[1], state, action)
    out.print(table)
    counts = Counter(item.state for item in planned)
    out.print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no intervals")


def print_status(job: str, views: list[ViewStatus]) -> None:
    """Per view: committed intervals (and how many of an older definition), failures, span."""
    table = Table(title=f"Status of job '{job}'")
    for column in ("feature view", "committed", "stale", "failed", "first", "last", "rows"):
        table.add_column(column, justify="left" if column == "feature view" else "right")
    for view in views:
        table.add_row(
            view.name,
            str(view.committed),
            str(view.stale),
            str(view.failed),
            f"{view.first:%Y-%m-%d %H:%M}" if view.first else "-",
            f"{view.last:%Y-%m-%d %H:%M}" if view.last else "-",
            f"{view.rows:,}",
        )
    out.print(table)


def print_runs(runs: list[RunRecord]) -> None:
    """Recent runs, newest first."""
    table = Table(title="Recent runs")
    for column in ("run", "job", "command", "started", "outcome", "intervals", "failed", "rows"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.run_id,
            run.job,
            run.command,
            f"{run.started_at:%Y-%m-%d %H:%M:%S}",
            run.outcome or "running or killed",
            str(run.intervals if run.intervals is not None else "-"),
            str(run.failed if run.failed is not None else "-"),
            f"{run.rows:,}" if run.rows is not None else "-",
        )
    out.print(table if runs else "No runs recorded.")
