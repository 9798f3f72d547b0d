"""What each interval's state is (committed, stale, failed, missing, unreadable) and what a run
does with it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from engine.define.feature_views import BatchFeatureView
from engine.errors import StaleIntervals
from engine.plan.tasks import Task
from engine.store.ledger import Ledger
from engine.store.parquet import UnreadableFile, committed_files
from engine.store.reconcile import quarantine_dir


@dataclass(frozen=True)
class PlannedInterval:
    """One interval of one view: its state now, whether a run computes it, and why, when its
    file cannot be read."""

    task: Task
    state: str  # "committed", "stale" (committed by another definition), "failed", "missing",
    # or "unreadable" (its file cannot be read: a run moves it aside and computes it again)
    compute: bool
    note: str | None = None


def plan_intervals(
    output: str | Path,
    views: Sequence[BatchFeatureView],
    windows: Mapping[str, list[tuple[datetime, datetime]]],
    *,
    overwrite: bool = False,
    allow_stale: bool = False,
) -> list[PlannedInterval]:
    """The state of every interval in `windows` (per view) and whether a run computes it.

    Reads the files (the truth) and, for failures, the ledger; changes nothing. Without
    `overwrite`, committed intervals are skipped and stale ones are refused, unless
    `allow_stale` keeps them as they are. Unreadable files (a run's reconcile moves them
    aside first) are always computed again.
    """
    ledger = Ledger.existing(output)
    entries = ledger.entries(state="failed") if ledger else []
    failed = {(e.feature_view, e.interval_start) for e in entries}
    planned = []
    for view in views:
        bad: list[UnreadableFile] = []
        files = {f.start: f.fingerprint for f in committed_files(output, view.name, bad.append)}
        unreadable = {b.start: b for b in bad}
        for start, end in windows.get(view.name, []):
            fingerprint, note = files.get(start), None
            if start in unreadable:
                state = "unreadable"
                note = (
                    f"{unreadable[start]}; a run or backfill moves it to {quarantine_dir(output)} "
                    f"and computes its interval again."
                )
            elif fingerprint is None:
                state = "failed" if (view.name, start) in failed else "missing"
            else:
                state = "committed" if fingerprint == view.fingerprint else "stale"
            compute = overwrite or state in ("failed", "missing", "unreadable")
            planned.append(PlannedInterval(Task(view.name, start, end), state, compute, note))
    stale = [p for p in planned if p.state == "stale"]
    if stale and not (overwrite or allow_stale):
        raise StaleIntervals(_stale_message(stale), view=stale[0].task.feature_view)
    order = {view.name: i for i, view in enumerate(views)}
    return sorted(planned, key=lambda p: (p.task.start, order[p.task.feature_view]))


def _stale_message(stale: list[PlannedInterval]) -> str:
    names = sorted({p.task.feature_view for p in stale})
    shown = ", ".join(p.task.label for p in stale[:5])
    if len(stale) > 5:
        shown += f" and {len(stale) - 5} more"
    return (
        f"Feature view(s) {', '.join(repr(n) for n in names)} changed since {len(stale)} "
        f"interval(s) were committed: {shown}. Rerun with --overwrite to recompute them, or "
        f"--allow-stale to keep them and compute only what is missing."
    )
