"""Reading back committed output: only committed intervals, in order, typed as declared."""

from __future__ import annotations

import shutil
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import backfill
from engine.errors import SettingsError
from engine.plan.job import load_job
from engine.retrieve.offline import read_features, write_table
from engine.store.ledger import Ledger
from engine.store.parquet import committed_files
from tests.conftest import JOB_HEADER, make_events

# The source lists rows newest first, each event twice (keys 'uN' and 'xuN', same timestamp),
# so the read must sort by time and then by key. Day 27 fails on its first row with quantity 6.
JOB = """
doubled = BatchSource("doubled", batch_config=DuckDBConfig(
    query=f\"\"\"SELECT user_id, timestamp, amount, text, quantity FROM read_parquet('{EVENTS}')
    UNION ALL SELECT 'x' || user_id, timestamp, amount + 1, text, quantity
    FROM read_parquet('{EVENTS}') ORDER BY timestamp DESC, user_id DESC\"\"\",
    timestamp_field="timestamp"))

@batch_feature_view(name="scores", mode="python", sources=[doubled], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("doubled", Float64), Attribute("words", Int32)])
def scores(row):
    if row["timestamp"].day == 27 and row["quantity"] == 6:
        raise ValueError("no sixes on the 27th")
    return {"doubled": row["amount"] * 2, "words": len(row["text"].split())}

@batch_feature_view(name="totals", mode="polars", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("quantity", Int64)])
def totals(df):
    return df.select("user_id", "timestamp", pl.col("quantity").cast(pl.Int64))
"""
DAY = timedelta(days=1)
D26, D27, D28, D29 = (datetime(2024, 10, 26, tzinfo=UTC) + i * DAY for i in range(4))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(job, output) after a backfill of 3 days in which the 27th failed."""
    folder = tmp_path_factory.mktemp("read_back")
    pq.write_table(make_events(), folder / "events.parquet")
    job = folder / "job.py"
    header = JOB_HEADER.format(events=str(folder / "events.parquet"))
    job.write_text(header + textwrap.dedent(JOB))
    summary = backfill(job, D26, D29, output=folder / "store")
    assert [(f.task.feature_view, f.task.start) for f in summary.failed] == [("scores", D27)]
    return job, folder / "store"


@pytest.fixture
def store(built: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the built store, for tests that damage it."""
    return Path(shutil.copytree(built[1], tmp_path / "store"))


def expected(start: datetime = D26, end: datetime = D29) -> list[dict]:
    """The rows the 'scores' view should read back over [start, end), computed from events."""
    rows = []
    for event in make_events().to_pylist():
        ts = event["timestamp"].replace(tzinfo=UTC)
        if not (start <= ts < end) or D27 <= ts < D28:
            continue
        words = len(event["text"].split())
        for key, amount in ((event["user_id"], event["amount"]), ("x" + event["user_id"], None)):
            amount = event["amount"] + 1 if amount is None else amount
            rows.append({"user_id": key, "timestamp": ts, "doubled": amount * 2, "words": words})
    return sorted(rows, key=lambda row: (row["timestamp"], row["user_id"]))


def test_reads_committed_intervals_sorted_and_typed_as_declared(built):
    job, output = built
    table = read_features(job, "scores", output=output)
    assert table.schema == load_job(job).feature_views["scores"].output_schema()
    assert table.schema.field("timestamp").type == pa.timestamp("us", "UTC")
    assert table.schema.field("words").type == pa.int32()
    assert table.num_rows == 2 * 2 * 48  # two committed days, each event twice
    assert table.to_pylist() == expected()


def test_failed_interval_and_temporary_files_are_left_out(built, store):
    job, _ = built
    sample = next((store / "scores").glob("*/data.parquet"))
    strays = [
        store / "scores" / "interval_start=2024-10-27T00-00-00Z" / ".data.parquet.x.tmp",
        store / "scores" / "interval_start=2024-10-26T00-00-00Z" / ".data.parquet.y.tmp",
    ]
    for stray in strays:
        stray.parent.mkdir(exist_ok=True)
        shutil.copy(sample, stray)  # a complete, readable Parquet file: only its name differs
    assert [f.start for f in committed_files(store, "scores")] == [D26, D28]
    assert read_features(job, "scores", output=store).to_pylist() == expected()


def test_range_filters_rows_at_both_ends(built):
    job, output = built
    start, end = D26 + timedelta(hours=6), D28 + timedelta(hours=12)
    table = read_features(job, "scores", output=output, start=start, end=end)
    assert table.to_pylist() == expected(start, end)
    times = table["timestamp"].to_pylist()
    assert min(times) == start  # an event at exactly the start is in
    assert max(times) == end - timedelta(minutes=30)  # the one at exactly the end is out
    # Naive bounds are UTC; aware ones are converted.
    naive = read_features(job, "scores", output=output, start=datetime(2024, 10, 26, 6), end=end)
    plus_two = timezone(timedelta(hours=2))
    aware = read_features(
        job, "scores", output=output, start=datetime(2024, 10, 26, 8, tzinfo=plus_two), end=end
    )
    assert naive.equals(table) and aware.equals(table)
    only_start = read_features(job, "scores", output=output, start=D28 + timedelta(hours=23))
    assert only_start.to_pylist() == expected(D28 + timedelta(hours=23))
    assert only_start.num_rows == 2 * 2


def test_files_are_the_truth_not_the_ledger(built, store):
    job, _ = built
    Ledger(store).forget("scores", D28)  # a crash between rename and ledger write
    (store / "scores" / "interval_start=2024-10-26T00-00-00Z" / "data.parquet").unlink()
    assert [e.interval_start for e in Ledger(store).entries("scores", "committed")] == [D26]
    assert read_features(job, "scores", output=store).to_pylist() == expected(D28)


def test_no_committed_interval_gives_an_empty_table_with_the_schema(built, tmp_path):
    job, output = built
    schema = load_job(job).feature_views["scores"].output_schema()
    for table in (
        read_features(job, "scores", output=tmp_path / "nothing_here"),
        read_features(job, "scores", output=output, start=D27, end=D28),
        read_features(job, "scores", output=output, start=D29),
    ):
        assert table.num_rows == 0
        assert table.schema == schema


def test_unknown_view_and_inverted_range_are_settings_errors(built):
    job, output = built
    with pytest.raises(SettingsError) as error:
        read_features(job, "score", output=output)
    assert str(error.value) == (
        "Job 'job' has no batch feature view 'score'; it declares: scores, totals."
    )
    with pytest.raises(SettingsError, match="is not before the end"):
        read_features(job, "scores", output=output, start=D28, end=D27)


def test_write_table_formats(built, tmp_path, capsys):
    job, output = built
    table = read_features(job, "scores", output=output, start=D28, end=D28 + timedelta(hours=1))
    write_table(table, "parquet", tmp_path / "out.parquet")
    assert pq.read_table(tmp_path / "out.parquet").equals(table)
    write_table(table, "csv")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == '"user_id","timestamp","doubled","words"'
    assert lines[1] == '"u0",2024-10-28 00:00:00.000000Z,240,6'
    assert len(lines) == 1 + table.num_rows
    write_table(table, "table")
    shown = capsys.readouterr().out
    assert "shape: (4, 4)" in shown and "xu0" in shown
    with pytest.raises(SettingsError, match="output path"):
        write_table(table, "parquet")
    with pytest.raises(SettingsError, match="Unknown format 'json'"):
        write_table(table, "json")
