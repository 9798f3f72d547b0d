"""What the CLI shows besides runs, as library functions: a job's validation, a store's
status per feature view, and its recent runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from engine.plan.environments import check_environments
from engine.plan.job import Job, load_job
from engine.plan.probe import probe_sources
from engine.store.ledger import Ledger, RunRecord


@dataclass(frozen=True)
class ViewStatus:
    """One feature view's intervals in a store."""

    name: str
    committed: int
    stale: int  # committed by another definition
    failed: int
    first: datetime | None  # start of the first committed interval
    last: datetime | None  # end of the last
    rows: int


def validate(job: str | Path) -> tuple[Job, list[str]]:
    """Import the job, check its environments and probe its sources' schemas; return the
    job and notes, or raise a RivuletError. Nothing runs and nothing is written.

    Example:
        loaded, notes = validate("jobs/embeddings.py")
    """
    loaded = load_job(job)
    notes = check_environments(loaded.feature_views.values(), loaded.environments)
    probe_sources(loaded.feature_views.values())
    return loaded, notes


def status(job: str | Path, output: str | Path = "offline_store") -> tuple[Job, list[ViewStatus]]:
    """Each feature view of the job with its committed, stale and failed intervals in the
    store at `output` (none when the store has no ledger yet).

    Example:
        loaded, views = status("jobs/embeddings.py")
    """
    loaded = load_job(job)
    ledger = Ledger.existing(output)
    entries = ledger.entries() if ledger else []
    views = []
    for view in loaded.feature_views.values():
        mine = [e for e in entries if e.feature_view == view.name]
        committed = [e for e in mine if e.state == "committed"]
        views.append(
            ViewStatus(
                view.name,
                len(committed),
                sum(e.fingerprint != view.fingerprint for e in committed),
                sum(e.state == "failed" for e in mine),
                committed[0].interval_start if committed else None,
                committed[-1].interval_end if committed else None,
                sum(e.rows or 0 for e in committed),
            )
        )
    return loaded, views


def history(
    output: str | Path = "offline_store", job: str | None = None, limit: int = 20
) -> list[RunRecord]:
    """The store's most recent runs (of one job, when named), newest first.

    Example:
        [last, *_] = history("offline_store")
    """
    ledger = Ledger.existing(output)
    return ledger.runs(job=job, limit=limit) if ledger else []
