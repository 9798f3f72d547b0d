"""Transform output is checked against the declaration; only whole intervals are committed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import backfill
from engine.plan.tasks import Task
from engine.store.parquet import AlreadyCommitted, PartitionWriter
from engine.work.worker import RunSettings, Worker

DECLARE = """
@batch_feature_view(name="view", mode="{mode}", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), features=[{features}])
"""


def failure(write_job, tmp_path: Path, mode: str, features: str, transform: str) -> str:
    """Run one day and return the single failed interval's error, checking nothing was written."""
    job = write_job(DECLARE.format(mode=mode, features=features) + transform)
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")
    assert not summary.ok
    [failed] = summary.failed
    assert failed.error_kind in ("Output error", "Transform error")
    assert list((tmp_path / "o").rglob("*.parquet")) == []
    assert list((tmp_path / "o").rglob("*.tmp")) == []
    return failed.error


def test_tecton_seed_declaring_text_but_returning_embedding_is_rejected(write_job, tmp_path):
    error = failure(
        write_job,
        tmp_path,
        "python",
        'Attribute("text", String)',
        """
def view(input_map, context):
    return {"embedding": [0.1, 0.2]}
""",
    )
    assert "Feature view 'view'" in error
    assert "'text' (declared String) is missing" in error
    assert "'embedding' (returned list) is not declared" in error
    assert "user_id='u0'" in error and "2024-10-26T00:00:00+00:00" in error


@pytest.mark.parametrize(
    ("declared", "returned", "shown"),
    [
        ("Int64", '"many"', "str ('many')"),
        ("Float64", "[1.0]", "list ([1.0])"),
        ("Array(Float32)", '"not a list"', "str ('not a list')"),
        ("Int32", "2**40", "int (1099511627776)"),
        ("Int64", "1.5", "float (1.5)"),
    ],
)
def test_mistyped_feature_names_feature_types_and_row(
    write_job, tmp_path, declared, returned, shown
):
    error = failure(
        write_job,
        tmp_path,
        "python",
        f'Attribute("f", {declared})',
        f"""
def view(row):
    return {{"f": {returned} if row["quantity"] == 3 else None}}
""",
    )
    assert f"'f' is declared {declared} but the transform returned {shown}" in error
    assert (
        "user_id='u0', timestamp=2024-10-26T01:30:00+00:00" in error
    )  # the first row with quantity 3


def test_castable_values_are_accepted(write_job, tmp_path):
    job = write_job(
        DECLARE.format(mode="python", features='Attribute("f", Float64), Attribute("i", Int64)')
        + """
def view(row):
    return {"f": row["quantity"], "i": float(row["quantity"])}
"""
    )
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")
    assert summary.ok, summary.failed


def test_frame_missing_and_extra_columns(write_job, tmp_path):
    error = failure(
        write_job,
        tmp_path,
        "polars",
        'Attribute("score", Float64)',
        """
def view(df):
    return df.select("user_id", "timestamp", pl.col("amount").alias("amount_copy"))
""",
    )
    assert "'score' (declared Float64) is missing" in error
    assert "'amount_copy'" in error and "is not declared" in error


def test_frame_mistyped_column(write_job, tmp_path):
    error = failure(
        write_job,
        tmp_path,
        "polars",
        'Attribute("score", Int64)',
        """
def view(df):
    return df.select("user_id", "timestamp", pl.col("text").alias("score"))
""",
    )
    assert "'score' is declared Int64 but the transform returned str ('event number 0" in error


def test_python_transform_returning_a_non_dict(write_job, tmp_path):
    error = failure(
        write_job, tmp_path, "python", 'Attribute("f", Int64)', "def view(row):\n    return 1\n"
    )
    assert "returned int" in error and "returns a dict of features" in error


def test_timestamps_outside_the_interval_are_rejected(write_job, tmp_path):
    error = failure(
        write_job,
        tmp_path,
        "polars",
        'Attribute("f", Int64)',
        """
def view(df):
    return df.select("user_id", (pl.col("timestamp") + pl.duration(days=3)).alias("timestamp"),
                     pl.col("quantity").alias("f"))
""",
    )
    assert "returned a row outside its interval [2024-10-26 00:00, 2024-10-27 00:00)" in error
    assert "timestamp=2024-10-29T00:00:00+00:00" in error


def test_transform_exception_names_view_row_and_error(write_job, tmp_path):
    error = failure(
        write_job,
        tmp_path,
        "python",
        'Attribute("f", Int64)',
        """
def view(row):
    if row["quantity"] == 5:
        raise ValueError("bad quantity")
    return {"f": 1}
""",
    )
    assert error.startswith("Feature view 'view': the transform raised ValueError: bad quantity")
    assert "user_id='u2', timestamp=2024-10-26T02:30:00+00:00" in error


def test_a_failed_interval_commits_nothing_and_others_commit(write_job, tmp_path):
    job = write_job(
        DECLARE.format(mode="python", features='Attribute("f", Int64)')
        + """
def view(row, context):
    if context.start_time.day == 27 and row["quantity"] == 6:
        raise RuntimeError("boom")
    return {"f": row["quantity"]}
"""
    )
    summary = backfill(
        job, datetime(2024, 10, 26), datetime(2024, 10, 29), output=tmp_path / "o", workers=2
    )
    assert [r.task.start.day for r in summary.failed] == [27]
    committed = sorted(p.parent.name for p in (tmp_path / "o").rglob("*.parquet"))
    assert committed == [
        "interval_start=2024-10-26T00-00-00Z",
        "interval_start=2024-10-28T00-00-00Z",
    ]
    assert list((tmp_path / "o").rglob(".*.tmp")) == []


def test_partition_writer_renames_only_on_commit(tmp_path: Path) -> None:
    schema = pa.schema([("x", pa.int64())])
    table = pa.table({"x": [1, 2, 3]}, schema=schema)
    with PartitionWriter(tmp_path / "a", schema, {"rivulet.run_id": "r1"}) as writer:
        writer.write(table)
        assert list((tmp_path / "a").glob("*.parquet")) == []  # only a temporary name so far
        [temporary] = (tmp_path / "a").iterdir()
        assert temporary.name.startswith(".data.parquet.r1.") and temporary.suffix == ".tmp"
        final = writer.commit()
    assert final == tmp_path / "a" / "data.parquet" and writer.rows == 3

    with pytest.raises(RuntimeError), PartitionWriter(tmp_path / "b", schema, {}) as writer:
        writer.write(table)
        raise RuntimeError("transform failed mid-interval")
    assert list((tmp_path / "b").iterdir()) == []


def test_a_late_attempt_never_replaces_its_runs_commit(tmp_path: Path) -> None:
    """Two attempts of one run at one interval (a Ray actor presumed dead that was not):
    each writes its own temporary file, the first commit stands, the late one is refused
    (told which file stands) and leaves nothing behind. A later run replaces the file, as a
    recompute does."""
    schema = pa.schema([("x", pa.int64())])

    def attempt(run_id: str, value: int) -> PartitionWriter:
        writer = PartitionWriter(tmp_path, schema, {"rivulet.run_id": run_id})
        writer.__enter__()
        writer.write(pa.table({"x": [value]}, schema=schema))
        return writer

    late, retried = attempt("r1", 1), attempt("r1", 2)
    assert len(list(tmp_path.glob(".*.tmp"))) == 2  # neither truncates the other's file
    retried.commit()
    retried.__exit__(None, None, None)
    with pytest.raises(AlreadyCommitted) as refused:
        late.commit()
    late.__exit__(None, None, None)
    assert (refused.value.path, refused.value.rows) == (tmp_path / "data.parquet", 1)
    assert [p.name for p in tmp_path.iterdir()] == ["data.parquet"]
    assert pq.read_table(tmp_path / "data.parquet")["x"].to_pylist() == [2]

    with PartitionWriter(tmp_path, schema, {"rivulet.run_id": "r2"}) as recompute:
        recompute.write(pa.table({"x": [3]}, schema=schema))
        recompute.commit()
    assert pq.read_table(tmp_path / "data.parquet")["x"].to_pylist() == [3]


def test_a_late_worker_attempt_reports_the_commit_that_stands(
    write_job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker side of the above: the late attempt succeeds with the file that stands,
    so the driver records the interval once, whichever attempt it hears from."""
    job = write_job(
        """
import os

@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("attempt", String)])
def view(row):
    return {"attempt": os.environ["ATTEMPT"]}
"""
    )
    settings = RunSettings(str(job), str(tmp_path / "o"), run_id="r1")
    task = Task("view", datetime(2024, 10, 26, tzinfo=UTC), datetime(2024, 10, 27, tzinfo=UTC))
    results = []
    for attempt in ("first", "late"):
        monkeypatch.setenv("ATTEMPT", attempt)
        worker = Worker(settings, {})
        results.append(worker.materialize(task))
        worker.close()
    first, late = results
    assert first.ok and late.ok, late.error
    assert (late.path, late.rows) == (first.path, first.rows) and first.rows > 0
    assert set(pq.read_table(first.path)["attempt"].to_pylist()) == {"first"}
