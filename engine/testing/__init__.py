"""Golden tests: run a job's feature views on a fixed range and compare with committed files.

A job declares `golden = GoldenTest(start=..., end=...)`; `run_golden(job)` backfills that
range into a temporary store and compares each view's rows with `<golden_dir>/<view>.jsonl`
(one JSON object per row), `run_golden(job, update=True)` rewrites those files, and
`assert_matches_golden(job)` is the pytest form. May import the run functions and
everything below them.

Example:
    from engine.testing import assert_matches_golden
    assert_matches_golden("jobs/fraud_signals.py")
"""

from engine.testing.diff import CellChange, ViewDiff
from engine.testing.runner import GoldenResult, assert_matches_golden, find_golden_test, run_golden

__all__ = [
    "CellChange",
    "GoldenResult",
    "ViewDiff",
    "assert_matches_golden",
    "find_golden_test",
    "run_golden",
]
