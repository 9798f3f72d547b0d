"""Transaction scoring: a user's daily aggregates, served beside a score computed per request.

`user_metrics` (online=True) aggregates each user's events per day; every committed day
publishes each user's newest row to the online store. `transaction_score` is computed at
request time from the request's transaction and the user's metrics, read from the online
store by the request's `user_id`, with a call to the scoring API (`FRAUD_API_URL`, as in
jobs/fraud_signals.py). The `scoring` service answers both.

    export FRAUD_API_URL=http://127.0.0.1:PORT   # python -m fixtures.mock_api prints one
    rivulet backfill jobs/transaction_scoring.py --start 2024-10-26 --end 2024-11-09
    rivulet serve jobs/transaction_scoring.py    # or: make serve-scoring

The bundled events are from 2024, so `user_metrics` declares no `ttl`: with one, every
value would be EXPIRED when read today.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import polars as pl
from fraud_signals import EVENTS, events, fraud_api, user

from engine import (
    Attribute,
    FeatureService,
    Field,
    Float64,
    GoldenTest,
    Int64,
    RequestSource,
    String,
    batch_feature_view,
    realtime_feature_view,
)

# `rivulet test` backfills two days and compares them with fixtures/golden/transaction_scoring/.
golden = GoldenTest(
    start=datetime(2024, 10, 26),
    end=datetime(2024, 10, 28),
    golden_dir=EVENTS.parents[1] / "golden" / "transaction_scoring",
)


@batch_feature_view(
    name="user_metrics",
    mode="polars",
    sources=[events],
    entities=[user],
    batch_schedule=timedelta(days=1),
    feature_start_time=datetime(2024, 10, 26),
    timestamp_field="timestamp",
    features=[
        Attribute("transactions", Int64),
        Attribute("mean_amount", Float64),
        Attribute("max_amount", Float64),
    ],
    online=True,
)
def user_metrics(events: pl.DataFrame, context) -> pl.DataFrame:
    """Per user and day: how many transactions, their mean and largest amount, stamped at
    the user's last transaction of the day."""
    return (
        events.group_by("user_id")
        .agg(
            pl.col("timestamp").max(),
            pl.len().cast(pl.Int64).alias("transactions"),
            pl.col("amount").mean().alias("mean_amount"),
            pl.col("amount").max().alias("max_amount"),
        )
        .sort("user_id")
    )


transaction = RequestSource(schema=[Field("user_id", String), Field("amount", Float64)])


@realtime_feature_view(
    sources=[transaction, user_metrics],
    mode="python",
    features=[Attribute("fraud_score", Float64), Attribute("amount_vs_mean", Float64)],
    resource_providers={"fraud_api": fraud_api},
    timeout=timedelta(seconds=2),
)
def transaction_score(
    transaction: dict[str, Any], user_metrics: dict[str, Any], context
) -> dict[str, Any]:
    """The API's score of this transaction, and its amount against the user's mean (None
    for a user without metrics)."""
    response = context.resources["fraud_api"].post("/v1/score", json=transaction)
    response.raise_for_status()
    mean = user_metrics["mean_amount"]
    return {
        "fraud_score": response.json()["score"],
        "amount_vs_mean": transaction["amount"] / mean if mean else None,
    }


scoring = FeatureService(name="scoring", features=[user_metrics, transaction_score])
