"""Benchmark job of scenario 13: Feast's contender's three batch views and its on-demand
view, written for Rivulet over the same Parquet files (`BENCH_ONLINE_DATA`, the folder,
and `BENCH_ONLINE_SUFFIX`, "<rows>_<entities>", as bench/feast/contender.py names them).

Each view hands its rows through unchanged (polars mode, daily intervals over the data's
30 days) and is served online; like Feast's online reads, they declare no ttl.
"""

import os
from datetime import datetime
from pathlib import Path

import polars as pl

from engine import (
    Attribute,
    BatchSource,
    Entity,
    FeatureService,
    Field,
    FileConfig,
    Float64,
    Int64,
    RequestSource,
    batch_feature_view,
    realtime_feature_view,
)

DATA = Path(os.environ.get("BENCH_ONLINE_DATA", "."))
SUFFIX = os.environ.get("BENCH_ONLINE_SUFFIX", "1000000_10000")
START = datetime(2026, 10, 2)  # the contender's data: the 30 days before 2026-11-01
FEATURES = {
    "user_txn_stats": {
        "avg_amount": Float64, "max_amount": Float64, "txn_count_7d": Int64,
        "txn_count_30d": Int64, "refund_rate": Float64,
    },
    "user_session_stats": {
        "sessions_7d": Int64, "avg_session_minutes": Float64, "pages_per_session": Float64,
        "days_active_30d": Int64, "bounce_rate": Float64,
    },
    "user_account_stats": {
        "account_age_days": Int64, "credit_limit": Float64, "num_cards": Int64,
        "risk_score": Float64, "loyalty_points": Int64,
    },
}  # fmt: skip
user = Entity(name="user", join_keys=[Field("user_id", Int64)])


def passed_through(name: str):
    """A batch view of `name`'s source that keeps its rows as they are."""
    source = BatchSource(
        name=name,
        batch_config=FileConfig(
            uri=str(DATA / f"{name}_{SUFFIX}.parquet"), timestamp_field="event_timestamp"
        ),
    )
    columns = ["user_id", "event_timestamp", *FEATURES[name]]

    @batch_feature_view(
        name=name,
        mode="polars",
        sources=[source],
        entities=[user],
        batch_schedule="1d",
        feature_start_time=START,
        timestamp_field="event_timestamp",
        features=[Attribute(feature, dtype) for feature, dtype in FEATURES[name].items()],
        online=True,
    )
    def view(rows: pl.DataFrame, context) -> pl.DataFrame:
        return rows.select(columns)

    return view


user_txn_stats = passed_through("user_txn_stats")
user_session_stats = passed_through("user_session_stats")
user_account_stats = passed_through("user_account_stats")


@realtime_feature_view(
    sources=[RequestSource(schema=[Field("amount", Float64)]), user_txn_stats],
    mode="python",
    features=[Attribute("amount_ratio", Float64)],
)
def amount_vs_avg(request, txn):
    """The request's amount against the user's average (None without one)."""
    average = txn["avg_amount"]
    return {"amount_ratio": request["amount"] / average if average else None}


user_online_v1 = FeatureService(
    name="user_online_v1",
    features=[user_txn_stats, user_session_stats, user_account_stats, amount_vs_avg],
)
