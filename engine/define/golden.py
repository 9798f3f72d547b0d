"""`GoldenTest`: the fixed range a job's feature views are tested on against golden files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from engine.define.schedule import as_utc
from engine.errors import DefinitionError

GOLDEN_ROOT = Path("fixtures") / "golden"


@dataclass(frozen=True)
class GoldenTest:
    """The range `[start, end)` that `rivulet test` backfills and compares to golden files.

    A job declares one at module level. `feature_views` limits the test to those views (by
    default all of the job's batch views). The golden files are `<golden_dir>/<view>.jsonl`;
    without `golden_dir` it is `fixtures/golden/<job name>/`. A relative `golden_dir` (and the
    default) is relative to the working directory of the run, as a relative `FileConfig` uri
    is; a job that should be testable from anywhere builds an absolute path from `__file__`.

    Example:
        golden = GoldenTest(start=datetime(2024, 10, 26), end=datetime(2024, 10, 27))
    """

    start: datetime
    end: datetime
    feature_views: tuple[str, ...] = ()
    golden_dir: Path | None = None

    def __init__(
        self,
        start: datetime,
        end: datetime,
        feature_views: Sequence[str] = (),
        golden_dir: str | Path | None = None,
    ) -> None:
        for name, value in (("start", start), ("end", end)):
            if not isinstance(value, datetime):
                raise DefinitionError(
                    f"GoldenTest {name} must be a datetime such as datetime(2024, 10, 26), "
                    f"not {value!r}."
                )
        start, end = as_utc(start), as_utc(end)
        if not start < end:
            raise DefinitionError(
                f"GoldenTest needs start before end, not start={start.isoformat()}, "
                f"end={end.isoformat()}."
            )
        if isinstance(feature_views, str):
            raise DefinitionError(
                f"GoldenTest feature_views must be a list of names, not the string "
                f"{feature_views!r}; write feature_views=[{feature_views!r}]."
            )
        views = tuple(feature_views)
        if not all(isinstance(view, str) and view for view in views):
            raise DefinitionError(
                f"GoldenTest feature_views must be non-empty strings, not {list(views)!r}."
            )
        if len(set(views)) != len(views):
            raise DefinitionError(f"GoldenTest feature_views names a view twice: {list(views)}.")
        if golden_dir is not None and not isinstance(golden_dir, str | Path):
            raise DefinitionError(
                f"GoldenTest golden_dir must be a path or None, not {golden_dir!r}."
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "feature_views", views)
        object.__setattr__(self, "golden_dir", None if golden_dir is None else Path(golden_dir))

    def directory(self, job_name: str) -> Path:
        """The folder of this job's golden files: `golden_dir`, or fixtures/golden/<job_name>."""
        return self.golden_dir if self.golden_dir is not None else GOLDEN_ROOT / job_name
