"""status, history and validate as library functions: what the CLI prints, as values."""

from __future__ import annotations

from datetime import UTC, datetime

from engine import backfill
from engine.reports import history, status, validate

VIEW = """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)])
def view(row):
    return {"n": row["quantity"]}
"""


def test_status_and_history_describe_the_store(write_job, tmp_path) -> None:
    job = write_job(VIEW)
    assert status(job, tmp_path / "o")[1][0].committed == 0  # no store yet: nothing
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 28), output=tmp_path / "o")
    loaded, [view] = status(job, tmp_path / "o")
    assert loaded.name == "job" and view.name == "view"
    assert (view.committed, view.stale, view.failed, view.rows) == (2, 0, 0, 96)
    assert (view.first, view.last) == (datetime(2024, 10, 26, tzinfo=UTC),
                                       datetime(2024, 10, 28, tzinfo=UTC))  # fmt: skip
    [run] = history(tmp_path / "o")
    assert (run.run_id, run.command, run.outcome, run.rows) == (
        summary.run_id, "backfill", "succeeded", 96,
    )  # fmt: skip
    assert history(tmp_path / "o", job="another") == []


def test_validate_returns_the_job_and_its_notes(write_job) -> None:
    job = write_job(VIEW.replace("features=[", 'environment="py311", features=['))
    loaded, notes = validate(job)
    assert list(loaded.feature_views) == ["view"]
    assert any("py311" in note for note in notes)  # an Environment the job does not declare
