"""Scenario 14's job: each user's transaction counts, amount sums and means over 1, 7 and 30
days, updated daily, from the transactions BENCH_EVENTS names."""

from datetime import timedelta

import polars as pl

from bench.data import START
from bench.jobs.sources import events_source, user
from engine import Aggregate, Field, Float64, Int32, batch_feature_view

WINDOWS = (1, 7, 30)


@batch_feature_view(
    sources=[events_source()],
    entities=[user],
    mode="polars",
    aggregation_interval=timedelta(days=1),
    feature_start_time=START,
    timestamp_field="timestamp",
    features=[
        Aggregate(input_column=column, function=function, time_window=timedelta(days=days))
        for column, function in (
            (Field("transaction", Int32), "count"),
            (Field("amount", Float64), "sum"),
            (Field("amount", Float64), "mean"),
        )
        for days in WINDOWS
    ],
)
def user_windows(transactions: pl.DataFrame) -> pl.DataFrame:
    return transactions.select("user_id", "timestamp", "amount").with_columns(
        transaction=pl.lit(1, pl.Int32)
    )
