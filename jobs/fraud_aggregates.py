"""Fraud features in the shape of Tecton's sample repository (its `rift/fraud` folder),
written afresh for the bundled data: a transactions source and a users source.

`transaction_user_is_adult` joins each transaction of the interval to the whole users table
(`users.unfiltered()`): whether the user was 18 or older at the transaction's time.
`user_transaction_aggregates` only prepares rows; Rivulet computes the windows: counts and
mean amounts over 1, 7 and 30 days, moving daily. Its offline store keeps one tile of
partial aggregates per user and day; reading it back (`rivulet read`,
`get_historical_features`) merges the tiles each window covers.

    rivulet backfill jobs/fraud_aggregates.py --start 2024-10-26 --end 2024-11-09
    rivulet read jobs/fraud_aggregates.py user_transaction_aggregates
    rivulet serve jobs/fraud_aggregates.py   # the `fraud_windows` service, by user_id
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from engine import (
    Aggregate,
    Attribute,
    BatchSource,
    Entity,
    FeatureService,
    Field,
    FileConfig,
    Float64,
    GoldenTest,
    Int32,
    String,
    batch_feature_view,
)

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "data"

transactions = BatchSource(
    name="transactions",
    batch_config=FileConfig(uri=str(DATA / "events"), timestamp_field="timestamp"),
)
users = BatchSource(
    name="users",
    batch_config=FileConfig(uri=str(DATA / "users"), timestamp_field="signup_timestamp"),
)
user = Entity(name="fraud_user", join_keys=[Field("user_id", String)])

# `rivulet test` backfills these days (the aggregates from 2024-10-26, as far back as their
# 30-day windows reach) and compares them with fixtures/golden/fraud_aggregates/.
golden = GoldenTest(
    start=datetime(2024, 10, 31),
    end=datetime(2024, 11, 3),
    golden_dir=DATA.parent / "golden" / "fraud_aggregates",
)


@batch_feature_view(
    sources=[transactions, users.unfiltered()],
    entities=[user],
    mode="pandas",
    batch_schedule=timedelta(days=1),
    feature_start_time=datetime(2024, 10, 26),
    timestamp_field="timestamp",
    features=[Attribute("user_is_adult", Int32)],
    description="Whether the user was 18 or older at the transaction's time.",
)
def transaction_user_is_adult(transactions: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    df = transactions.merge(users, on="user_id", how="inner")
    adult_from = pd.to_datetime(df["dob"], utc=True) + pd.DateOffset(years=18)
    df["user_is_adult"] = (df["timestamp"] >= adult_from).astype("int32")
    return df[["user_id", "timestamp", "user_is_adult"]]


@batch_feature_view(
    sources=[transactions],
    entities=[user],
    mode="pandas",
    aggregation_interval=timedelta(days=1),
    feature_start_time=datetime(2024, 10, 26),
    timestamp_field="timestamp",
    features=[
        *(
            Aggregate(
                input_column=Field("transaction", Int32), function="count", time_window=window
            )
            for window in (timedelta(days=1), timedelta(days=7), timedelta(days=30))
        ),
        *(
            Aggregate(input_column=Field("amount", Float64), function="mean", time_window=window)
            for window in (timedelta(days=1), timedelta(days=7), timedelta(days=30))
        ),
    ],
    online=True,
    description="Each user's transaction counts and mean amounts over 1, 7 and 30 days.",
)
def user_transaction_aggregates(transactions: pd.DataFrame) -> pd.DataFrame:
    df = transactions[["user_id", "timestamp", "amount"]].copy()
    df["transaction"] = 1
    return df


# Served by user_id: each user's windows as of the newest committed day.
fraud_windows = FeatureService(name="fraud_windows", features=[user_transaction_aggregates])
