"""Point-in-time joins against committed output, checked against polars.join_asof."""

from __future__ import annotations

import random
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from engine import backfill
from engine.errors import SettingsError, SpineError
from engine.plan.job import load_job
from engine.retrieve.historical import get_historical_features
from tests.conftest import JOB_HEADER, make_events

START = datetime(2024, 10, 26)
TTL = timedelta(hours=6)
# Two views over the same ticks: 'latest' keeps everything, 'recent' has a 6h ttl. Both have
# 'seq' and 'event_at' (the feature row's own timestamp), so those are prefixed in the output.
JOB = """
ticks = BatchSource("ticks", batch_config=FileConfig(uri={ticks!r}, timestamp_field="timestamp"))

@batch_feature_view(name="latest", mode="python", sources=[ticks], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("seq", Int64), Attribute("value", Float64),
              Attribute("event_at", Timestamp)])
def latest(row):
    return {{"seq": row["seq"], "value": row["seq"] / 4, "event_at": row["timestamp"]}}

@batch_feature_view(name="recent", mode="polars", sources=[ticks], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26), ttl="6h",
    features=[Attribute("seq", Int64), Attribute("score", Float32),
              Attribute("event_at", Timestamp)])
def recent(df):
    return df.select("user_id", "timestamp", "seq", (pl.col("seq") * 0.5).alias("score"),
                     pl.col("timestamp").alias("event_at"))
"""


def make_ticks() -> pa.Table:
    """Feature source rows on a 2-hour grid in shuffled order: many share key and time."""
    rng = random.Random(3)
    times = [START + timedelta(hours=2 * rng.randrange(36)) for _ in range(150)]
    users = [rng.choice(["u0", "u1", "u2", "u3"]) for _ in times]
    extra = [("u5", START + timedelta(hours=30))] * 3  # a three-way tie, nothing else
    users += [u for u, _ in extra]
    times += [t for _, t in extra]
    return pa.table(
        {
            "user_id": users,
            "timestamp": pa.array(times, pa.timestamp("us")),
            "seq": list(range(len(times))),
        }
    )


def make_spine() -> pl.DataFrame:
    """Naive spine times from before the first feature to after the last, on and off the
    grid, keys with no features (u4), repeated rows, in no particular order."""
    rng = random.Random(11)
    rows = []
    for i in range(300):
        offset = timedelta(minutes=30 * rng.randrange(-12, 170)) if i % 3 else timedelta(0)
        moment = START + offset if i % 3 else START + timedelta(hours=2 * rng.randrange(36))
        rows.append((rng.choice(["u0", "u1", "u2", "u3", "u4"]), moment))
    rows += rows[10:20]  # exact duplicates of key and time
    rng.shuffle(rows)
    return pl.DataFrame(
        {
            "user_id": [u for u, _ in rows],
            "event_time": [t for _, t in rows],
            "value": [i % 2 for i in range(len(rows))],  # a label that collides with a feature
        },
        schema={"user_id": pl.String, "event_time": pl.Datetime("us"), "value": pl.Int64},
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(job, output) with three days of both views committed."""
    folder = tmp_path_factory.mktemp("historical")
    pq.write_table(make_events(), folder / "events.parquet")
    pq.write_table(make_ticks(), folder / "ticks.parquet")
    job = folder / "job.py"
    header = JOB_HEADER.format(events=str(folder / "events.parquet"))
    job.write_text(header + textwrap.dedent(JOB.format(ticks=str(folder / "ticks.parquet"))))
    summary = backfill(job, START, START + timedelta(days=3), output=folder / "store")
    assert summary.ok and len(summary.results) == 6
    return job, folder / "store"


def reference(spine: pl.DataFrame, output: Path, view: str, ttl: timedelta | None) -> pl.DataFrame:
    """The view's features per spine row by polars.join_asof, then ttl masking."""
    files = sorted((output / view).glob("*/data.parquet"))
    features = pl.read_parquet(files, hive_partitioning=False)  # file order, as written
    features = features.sort("timestamp", maintain_order=True)  # ties stay in file order
    names = [c for c in features.columns if c not in ("user_id", "timestamp")]
    left = spine.with_row_index("row").select(
        "row", "user_id", pl.col("event_time").dt.replace_time_zone("UTC").alias("at")
    )
    joined = left.sort("at", maintain_order=True).join_asof(
        features.rename({"timestamp": "feature_ts"}),
        left_on="at",
        right_on="feature_ts",
        by="user_id",
        strategy="backward",
        check_sortedness=False,  # sorted by time overall, hence within each key
    )
    if ttl is not None:
        stale = pl.col("at") - pl.col("feature_ts") > ttl
        joined = joined.with_columns(pl.when(stale).then(None).otherwise(pl.col(names)).name.keep())
    return joined.sort("row").select(pl.col(names).name.prefix(f"{view}__"))


def test_matches_polars_join_asof_row_for_row(built):
    job, output = built
    spine = make_spine()
    result = get_historical_features(
        spine, [f"{job}:latest", f"{job}:recent"], output=output, timestamp_field="event_time"
    )
    expected = pl.concat(
        [spine, reference(spine, output, "latest", None), reference(spine, output, "recent", TTL)],
        how="horizontal",
    ).rename({"recent__score": "score"})
    assert result.column_names == [
        "user_id", "event_time", "value", "latest__seq", "latest__value", "latest__event_at",
        "recent__seq", "score", "recent__event_at",
    ]  # fmt: skip
    assert result.schema.field("score").type == pa.float32()
    assert result.schema.field("latest__event_at").type == pa.timestamp("us", "UTC")
    assert_frame_equal(pl.from_arrow(result), expected)


def test_spine_kept_in_order_and_features_are_point_in_time(built):
    job, output = built
    spine = make_spine()
    result = get_historical_features(spine, [(job, "latest"), (job, "recent")], output=output)
    assert result.select(spine.columns).equals(spine.to_arrow())  # every row, in order
    rows = result.to_pylist()
    masked = 0
    for row in rows:
        at = row["event_time"].replace(tzinfo=UTC)
        if row["latest__event_at"] is not None:
            assert row["latest__event_at"] <= at  # nothing from after the spine row
        if row["recent__event_at"] is not None:
            assert at - TTL <= row["recent__event_at"] <= at  # nothing older than the ttl
            assert row["recent__seq"] == row["latest__seq"]
        elif row["latest__event_at"] is not None:
            assert at - row["latest__event_at"] > TTL  # only the ttl hid the latest row
            masked += 1
    assert masked > 10
    assert all(r["latest__seq"] is None for r in rows if r["user_id"] == "u4")
    assert all(r["latest__seq"] is None for r in rows if r["event_time"] < START)
    assert sum(r["latest__seq"] is not None for r in rows) > len(rows) / 2


def test_equal_timestamps_ties_and_the_ttl_boundary(built):
    job, output = built
    tie = START + timedelta(hours=30)  # the only ticks of u5, all three at this instant
    micro = timedelta(microseconds=1)
    spine = pa.table(
        {
            "user_id": ["u5", "u5", "u5", "u5", "u5", None, "u5"],
            "at": pa.array(
                [tie - micro, tie, tie, tie + TTL, tie + TTL + micro, tie, None], pa.timestamp("us")
            ),
        }
    )
    view = load_job(job).feature_views["recent"]
    result = get_historical_features(spine, [view], output=output)
    # Equal timestamps match; of the tied rows (seq 150, 151, 152) the last written wins; an
    # age of exactly the ttl still matches, a microsecond more does not; null keys or times
    # match nothing.
    assert result["seq"].to_pylist() == [None, 152, 152, 152, None, None, None]
    assert result["event_at"].to_pylist()[1] == tie.replace(tzinfo=UTC)
    latest = get_historical_features(spine, [f"{job}:latest"], output=output)
    assert latest["seq"].to_pylist() == [None, 152, 152, 152, 152, None, None]  # no ttl


def test_spine_types_and_reference_forms_agree(built):
    job, output = built
    spine = make_spine().head(60)
    base = get_historical_features(spine, [f"{job}:recent"], output=output)
    aware = spine.with_columns(pl.col("event_time").dt.replace_time_zone("UTC"))
    shifted = spine.with_columns(
        pl.col("event_time").dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Tokyo")
    )
    for other in (spine.to_arrow(), spine.to_pandas(), aware, shifted):
        result = get_historical_features(other, [(str(job), "recent")], output=output)
        assert result.select(["seq", "score", "event_at"]).equals(
            base.select(["seq", "score", "event_at"])
        )


def test_bad_requests_are_settings_errors(built):
    job, output = built
    spine = make_spine()
    with pytest.raises(SpineError, match="no join key 'user_id' of feature view 'latest'"):
        get_historical_features(spine.drop("user_id"), [f"{job}:latest"], output=output)
    with pytest.raises(SpineError, match="2 timestamp columns"):
        two = spine.with_columns(pl.col("event_time").alias("other_time"))
        get_historical_features(two, [f"{job}:latest"], output=output)
    with pytest.raises(SettingsError, match="has no batch feature view 'nope'"):
        get_historical_features(spine, [f"{job}:nope"], output=output)
    with pytest.raises(SettingsError, match="requested more than once"):
        get_historical_features(spine, [f"{job}:latest", (job, "latest")], output=output)
    with pytest.raises(SettingsError, match="does not name a feature view"):
        get_historical_features(spine, ["latest"], output=output)
