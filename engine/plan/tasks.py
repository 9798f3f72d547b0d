"""Tasks: one feature view over one interval, described by plain picklable values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from engine.define.feature_views import BatchFeatureView
from engine.plan.intervals import tile


@dataclass(frozen=True)
class Task:
    """One unit of work, small enough to send to a worker process, which imports the job itself."""

    feature_view: str
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.feature_view} [{self.start:%Y-%m-%d %H:%M}, {self.end:%Y-%m-%d %H:%M})"


def plan_tasks(views: Sequence[BatchFeatureView], start: datetime, end: datetime) -> list[Task]:
    """Every interval of every view in [start, end), earliest first, views in declaration order."""
    tasks = [
        Task(view.name, lo, hi)
        for view in views
        for lo, hi in tile(view.feature_start_time, view.batch_schedule, start, end)
    ]
    order = {view.name: i for i, view in enumerate(views)}
    return sorted(tasks, key=lambda t: (t.start, order[t.feature_view]))
