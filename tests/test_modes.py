"""Each transform mode computes the same features, typed and ordered as declared."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import backfill
from engine.arrow import coalesced
from engine.store.ledger import Ledger
from tests.conftest import make_events

FEATURES = """
features=[Attribute("n_words", Int64), Attribute("double", Float64), Attribute("big", Bool)],
"""
DECLARE = """
@batch_feature_view(name="view", mode="{mode}", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), micro_batch_size=10,
    {features})
"""
TRANSFORMS = {
    "python": """
def view(row):
    return {"n_words": len(row["text"].split()), "double": row["amount"] * 2,
            "big": row["amount"] > 50}
""",
    "python-async": """
async def view(row, context):
    import asyncio

    await asyncio.sleep(0.001 * (row["quantity"] % 3))  # finish out of order
    return {"n_words": len(row["text"].split()), "double": row["amount"] * 2,
            "big": row["amount"] > 50}
""",
    "polars": """
def view(df):
    return df.select(
        "user_id", "timestamp",
        pl.col("text").str.split(" ").list.len().cast(pl.Int64).alias("n_words"),
        (pl.col("amount") * 2).alias("double"),
        (pl.col("amount") > 50).alias("big"),
    )
""",
    "pandas": """
def view(df, context):
    out = df[["user_id", "timestamp"]].copy()
    out["n_words"] = df["text"].str.split(" ").str.len()
    out["double"] = df["amount"] * 2
    out["big"] = df["amount"] > 50
    return out
""",
    "pyarrow": """
def view(table):
    import pyarrow.compute as pc

    # Features only: join keys and timestamp are carried over from the micro-batch.
    return pa.table({
        "n_words": pc.list_value_length(pc.split_pattern(table["text"], " ")),
        "double": pc.multiply(table["amount"], 2.0),
        "big": pc.greater(table["amount"], 50.0),
    })
""",
}


def expected_rows(days: int = 2) -> list[tuple]:
    events = make_events().to_pylist()
    end = datetime(2024, 10, 26 + days)
    return [
        (e["user_id"], e["timestamp"], len(e["text"].split()), e["amount"] * 2, e["amount"] > 50)
        for e in events
        if e["timestamp"] < end
    ]


@pytest.mark.parametrize("mode", sorted(TRANSFORMS))
def test_every_mode_writes_the_declared_features(mode: str, write_job, tmp_path: Path) -> None:
    declared_mode = mode.split("-")[0]
    job = write_job(DECLARE.format(mode=declared_mode, features=FEATURES) + TRANSFORMS[mode])
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 28), output=tmp_path / "out")
    assert summary.ok, summary.failed
    assert summary.rows_by_view == {"view": 96}

    files = sorted((tmp_path / "out" / "view").glob("*/data.parquet"))
    assert [f.parent.name for f in files] == [
        "interval_start=2024-10-26T00-00-00Z",
        "interval_start=2024-10-27T00-00-00Z",
    ]
    schema = pq.read_schema(files[0])
    assert [(f.name, f.type) for f in schema] == [
        ("user_id", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("n_words", pa.int64()),
        ("double", pa.float64()),
        ("big", pa.bool_()),
    ]
    # Source order is kept within each file, even when calls finish out of order.
    rows = []
    for file in files:
        rows += duckdb.sql(
            f"SELECT user_id, timezone('UTC', timestamp), n_words, double, big "
            f"FROM read_parquet('{file}', hive_partitioning = false)"
        ).fetchall()
    assert rows == expected_rows()


def test_python_mode_keeps_keys_and_timestamp_it_returns(write_job, tmp_path: Path) -> None:
    job = write_job(
        DECLARE.format(mode="python", features='features=[Attribute("upper", String)],')
        + """
def view(row):
    return {"user_id": row["user_id"].upper(), "upper": row["text"].upper()}
"""
    )
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")
    assert summary.ok, summary.failed
    users = duckdb.sql(f"SELECT DISTINCT user_id FROM '{tmp_path}/o/view/*/*.parquet' ORDER BY 1")
    assert users.fetchall() == [("U0",), ("U1",), ("U2",)]


def test_context_carries_the_interval_and_schedule(write_job, tmp_path: Path) -> None:
    job = write_job(
        DECLARE.format(mode="polars", features='features=[Attribute("hours", Int64)],')
        + """
def view(df, context):
    assert context.start_time.tzinfo is not None and context.batch_schedule == timedelta(days=1)
    hours = (context.end_time - context.start_time) // timedelta(hours=1)
    return df.select("user_id", "timestamp", pl.lit(hours, pl.Int64).alias("hours"))
"""
    )
    summary = backfill(job, datetime(2024, 10, 27), datetime(2024, 10, 28), output=tmp_path / "o")
    assert summary.ok, summary.failed
    hours = duckdb.sql(f"SELECT DISTINCT hours FROM '{tmp_path}/o/view/*/*.parquet'").fetchall()
    assert hours == [(24,)]


def test_output_is_byte_identical_across_runs_and_workers(write_job, tmp_path: Path) -> None:
    job = write_job(DECLARE.format(mode="python", features=FEATURES) + TRANSFORMS["python-async"])
    for name, workers in (("a", 1), ("b", 2)):
        summary = backfill(
            job,
            datetime(2024, 10, 26),
            datetime(2024, 10, 29),
            output=tmp_path / name,
            workers=workers,
        )
        assert summary.ok, summary.failed
    for file in sorted((tmp_path / "a").rglob("*.parquet")):
        twin = tmp_path / "b" / file.relative_to(tmp_path / "a")
        assert pq.read_table(file).equals(pq.read_table(twin))
        assert pq.read_table(file).num_rows == 48


def test_a_run_in_this_process_sees_the_job_as_edited(write_job, tmp_path: Path) -> None:
    # One worker runs in this process, which has imported the job before: each run must
    # still read the file as it is now, as a fresh process would.
    view = """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)])
def view(row):
    return {{"n": {value}}}
"""
    for value in (1, 2):
        job = write_job(view.format(value=value))
        summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27),
                           output=tmp_path / str(value))  # fmt: skip
        assert summary.ok, summary.failed
        found = duckdb.sql(f"SELECT DISTINCT n FROM '{tmp_path}/{value}/view/*/*.parquet'")
        assert found.fetchall() == [(value,)]


def test_python_mode_may_supply_a_join_key_the_source_lacks(write_job, tmp_path: Path) -> None:
    job = write_job(
        """
account = Entity(name="account", join_keys=[Field("account", String)])

@batch_feature_view(name="view", mode="python", sources=[events], entities=[account],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)])
def view(row):
    return {"account": "a-" + row["user_id"], "n": 1}
"""
    )
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 27), output=tmp_path / "o")
    assert summary.ok, summary.failed
    found = duckdb.sql(f"SELECT DISTINCT account FROM '{tmp_path}/o/view/*/*.parquet' ORDER BY 1")
    assert found.fetchall() == [("a-u0",), ("a-u1",), ("a-u2",)]


ONE_VIEW = """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)])
def view(row):
    return {"n": 1}
"""


def test_a_run_started_inside_an_event_loop_works(write_job, tmp_path: Path) -> None:
    # As from a notebook cell or an async application: the worker's loop needs a thread.
    job = write_job(ONE_VIEW)

    async def cell() -> object:
        return backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 28), output=tmp_path)

    summary = asyncio.run(cell())
    assert summary.ok, summary.failed
    assert len(summary.results) == 2


def test_an_error_in_on_event_stops_the_run_and_is_raised(write_job, tmp_path: Path) -> None:
    job = write_job(ONE_VIEW)

    def on_event(event: object) -> None:
        if type(event).__name__ == "RowsWritten":
            raise BrokenPipeError("the progress display went away")

    with pytest.raises(BrokenPipeError):
        backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 28), output=tmp_path,
                 on_event=on_event)  # fmt: skip
    # Not the interval's fault: nothing is recorded as failed, and no partial file is left.
    assert Ledger(tmp_path).entries(state="failed") == []
    assert list(tmp_path.rglob("*.tmp")) == []


FRAMES = """
many = BatchSource("many", batch_config=FileConfig(uri={events!r}, timestamp_field="timestamp"))

@batch_feature_view(name="view", mode="polars", sources=[many], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), {size}
    features=[Attribute("double", Float64)])
def view(df):
    with open({log!r}, "a") as log:
        log.write(f"{{df.height}}\\n")
    return df.select("user_id", "timestamp", (pl.col("amount") * 2).alias("double"))
"""


@pytest.mark.parametrize("size", ["", "micro_batch_size=5000,"])
def test_a_frame_view_without_resources_gets_whole_frames(
    write_job, tmp_path: Path, size: str
) -> None:
    """No calls to spread: without a micro_batch_size, each day of 24,000 rows is one frame
    (far under WHOLE_FRAME_BYTES, past the 10,000 rows of a micro-batch); with one, the
    transform gets frames of that size."""
    events = tmp_path / "many.parquet"
    pq.write_table(make_events(days=2, per_day=24_000), events)
    log = tmp_path / "frames.log"
    job = write_job(FRAMES.format(events=str(events), size=size, log=str(log)))
    summary = backfill(job, datetime(2024, 10, 26), datetime(2024, 10, 28), output=tmp_path / "o")
    assert summary.ok, summary.failed
    frames = [int(line) for line in log.read_text().split()]
    assert sum(frames) == sum(r.rows for r in summary.results) == 48_000
    assert sorted(frames) == sorted(([5000] * 4 + [4000]) * 2 if size else [24_000] * 2)


def test_coalesced_batches_keep_order_and_stay_near_the_size() -> None:
    batches = [pa.record_batch({"x": pa.array(range(i * 100, i * 100 + 100))}) for i in range(10)]
    merged = list(coalesced(batches, most_bytes=3 * batches[0].nbytes))
    assert [b.num_rows for b in merged] == [300, 300, 300, 100]
    assert pa.Table.from_batches(merged)["x"].to_pylist() == list(range(1000))
    assert [b.num_rows for b in coalesced(batches, most_bytes=1)] == [100] * 10
