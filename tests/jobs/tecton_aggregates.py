"""Batch views in the shapes of Tecton's sample repository, over the bundled events, for
tests/test_tecton_shapes.py: many aggregation functions and windows, a look-back source
(`select_range`), and parameters matched to sources by name."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import polars as pl

from engine import (
    Aggregate,
    Attribute,
    BatchSource,
    Entity,
    Field,
    FileConfig,
    Float64,
    Int64,
    LifetimeWindow,
    String,
    TectonTimeConstant,
    TimeWindow,
    TimeWindowSeries,
    batch_feature_view,
)
from engine.aggregation_functions import (
    approx_count_distinct,
    approx_percentile,
    first_distinct,
    last,
    last_distinct,
)

DATA = Path(__file__).resolve().parents[2] / "fixtures" / "data"
START = datetime(2024, 10, 26)

transactions = BatchSource(
    name="transactions",
    batch_config=FileConfig(uri=str(DATA / "events"), timestamp_field="timestamp"),
)
users = BatchSource(
    name="users",
    batch_config=FileConfig(uri=str(DATA / "users"), timestamp_field="signup_timestamp"),
)
user = Entity(name="user", join_keys=[Field("user_id", String)])
amount, quantity = Field("amount", Float64), Field("quantity", Int64)
DAY = timedelta(days=1)

# (function, column, window): every function, each over a window of its own
AGGREGATES = [
    ("count", quantity, timedelta(days=2)),
    ("sum", quantity, timedelta(days=3)),
    ("sum", amount, timedelta(days=1)),
    ("mean", amount, timedelta(days=5)),
    ("min", amount, timedelta(days=2)),
    ("max", quantity, LifetimeWindow()),
    ("first", amount, timedelta(days=2)),
    ("last", amount, TimeWindow(window_size=timedelta(days=2), offset=-DAY)),
    ("stddev_samp", amount, timedelta(days=3)),
    ("stddev_pop", amount, timedelta(days=3)),
    ("var_samp", quantity, timedelta(days=4)),
    ("var_pop", quantity, timedelta(days=4)),
    (approx_count_distinct(), quantity, timedelta(days=2)),
    (approx_percentile(0.5), amount, timedelta(days=2)),
    (last(3), quantity, timedelta(days=1)),
    (last_distinct(3), quantity, timedelta(days=2)),
    (first_distinct(2), quantity, timedelta(days=2)),
]


@batch_feature_view(
    sources=[transactions],
    entities=[user],
    mode="polars",
    aggregation_interval=DAY,
    feature_start_time=START,
    timestamp_field="timestamp",
    features=[
        Aggregate(input_column=column, function=function, time_window=window)
        for function, column, window in AGGREGATES
    ],
)
def user_activity(transactions: pl.DataFrame) -> pl.DataFrame:
    return transactions.select("user_id", "timestamp", "amount", "quantity")


@batch_feature_view(
    sources=[transactions],
    entities=[user],
    mode="pandas",
    aggregation_interval=DAY,
    feature_start_time=START,
    timestamp_field="timestamp",
    features=[
        Aggregate(
            input_column=quantity,
            function="sum",
            time_window=TimeWindowSeries(series_start=timedelta(days=-3), window_size=DAY),
        ),
        Aggregate(
            input_column=quantity,
            function="count",
            time_window=TimeWindowSeries(
                series_start=timedelta(days=-5),
                window_size=timedelta(days=2),
                step_size=DAY,
                series_end=-DAY,
            ),
        ),
    ],
)
def user_quantity_series(transactions: pd.DataFrame) -> pd.DataFrame:
    return transactions[["user_id", "timestamp", "quantity"]]


@batch_feature_view(
    sources=[
        transactions.select_range(
            start_time=TectonTimeConstant.MATERIALIZATION_START_TIME - timedelta(days=2),
            end_time=TectonTimeConstant.MATERIALIZATION_END_TIME,
        )
    ],
    entities=[user],
    mode="pandas",
    incremental_backfills=True,
    batch_schedule=DAY,
    feature_start_time=START,
    timestamp_field="timestamp",
    features=[Attribute("distinct_quantities_3d", Int64)],
)
def user_distinct_quantities_3d(transactions: pd.DataFrame, context) -> pd.DataFrame:
    """Distinct quantities of the last 3 days (the interval and 2 days before it), stamped
    just before the interval's end."""
    df = transactions.groupby("user_id").agg({"quantity": "nunique"}).reset_index()
    df = df.rename(columns={"quantity": "distinct_quantities_3d"})
    df["timestamp"] = pd.Timestamp(context.end_time) - pd.Timedelta(microseconds=1)
    return df[["user_id", "timestamp", "distinct_quantities_3d"]]


@batch_feature_view(
    sources=[transactions, users.unfiltered()],
    entities=[user],
    mode="pyarrow",
    batch_schedule=DAY,
    feature_start_time=START,
    timestamp_field="timestamp",
    features=[Attribute("days_since_signup", Int64)],
)
def days_since_signup(users, transactions):  # by name: the reverse of `sources`
    import pyarrow as pa

    signed = dict(
        zip(users["user_id"].to_pylist(), users["signup_timestamp"].to_pylist(), strict=True)
    )
    times = transactions["timestamp"].to_pylist()
    ids = transactions["user_id"].to_pylist()
    days = [(t - signed[u]).days if u in signed else None for u, t in zip(ids, times, strict=True)]
    return transactions.select(["user_id", "timestamp"]).append_column(
        "days_since_signup", pa.array(days, pa.int64())
    )
