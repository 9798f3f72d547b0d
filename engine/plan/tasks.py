"""Tasks: one feature view over one interval, described by plain picklable values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Task:
    """One unit of work, small enough to send to a worker process, which imports the job itself."""

    feature_view: str
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.feature_view} [{self.start:%Y-%m-%d %H:%M}, {self.end:%Y-%m-%d %H:%M})"
