"""Fraud scores for user events from an HTTP scoring API, per row and per micro-batch.

The API takes `POST /v1/score` with `{"user_id", "amount"}` and answers `{"score": ...}`, or
with `{"items": [...]}` and answers `{"items": [{"score": ...}, ...]}` in the same order.
`fixtures/mock_api.py` serves it (`python -m fixtures.mock_api` prints its URL).

    export FRAUD_API_URL=http://127.0.0.1:PORT
    rivulet backfill jobs/fraud_signals.py --start 2024-10-26 --end 2024-10-29

`fraud_score_now` scores a transaction at request time (`rivulet serve jobs/fraud_signals.py`),
within 2 s, and keeps each answer a minute: a retried payment is not scored twice.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from engine import (
    Attribute,
    BatchSource,
    Cache,
    Entity,
    FeatureService,
    Field,
    FileConfig,
    Float64,
    GoldenTest,
    RequestSource,
    String,
    batch_feature_view,
    realtime_feature_view,
    resource_provider,
)

EVENTS = Path(__file__).resolve().parent.parent / "fixtures" / "data" / "events"
BATCH = 200  # rows scored per request by the batched view

events = BatchSource(
    name="events",
    batch_config=FileConfig(uri=str(EVENTS), file_format="parquet", timestamp_field="timestamp"),
)
user = Entity(name="user_id", join_keys=[Field("user_id", String)])
# `rivulet test` backfills two days and compares them with fixtures/golden/fraud_signals/.
golden = GoldenTest(
    start=datetime(2024, 10, 26),
    end=datetime(2024, 10, 28),
    golden_dir=EVENTS.parents[1] / "golden" / "fraud_signals",
)


@resource_provider(description="An HTTP client for the fraud scoring API at FRAUD_API_URL.")
def fraud_api() -> httpx.Client:
    """One client (one connection pool) per worker; Rivulet calls its close() at shutdown."""
    url = os.environ.get("FRAUD_API_URL")
    if not url:
        raise RuntimeError("Set FRAUD_API_URL to the scoring API's base URL.")
    return httpx.Client(base_url=url, timeout=httpx.Timeout(10.0, connect=5.0))


@batch_feature_view(
    name="fraud_signals",
    mode="python",
    sources=[events],
    entities=[user],
    batch_schedule=timedelta(days=1),
    feature_start_time=datetime(2024, 10, 26),
    timestamp_field="timestamp",
    features=[Attribute("fraud_score", Float64)],
    resource_providers={"fraud_api": fraud_api},
)
def fraud_signals(row: dict[str, Any], context) -> dict[str, Any]:
    """One request per event; Rivulet keeps many in flight."""
    response = context.resources["fraud_api"].post(
        "/v1/score", json={"user_id": row["user_id"], "amount": row["amount"]}
    )
    response.raise_for_status()
    return {"fraud_score": response.json()["score"]}


@batch_feature_view(
    name="fraud_signals_batched",
    mode="polars",
    sources=[events],
    entities=[user],
    batch_schedule=timedelta(days=1),
    feature_start_time=datetime(2024, 10, 26),
    timestamp_field="timestamp",
    features=[Attribute("fraud_score", Float64)],
    resource_providers={"fraud_api": fraud_api},
    micro_batch_size=BATCH,
)
def fraud_signals_batched(events: pl.DataFrame, context) -> pl.DataFrame:
    """One request per micro-batch of 200 events: the same scores, far fewer requests."""
    items = events.select("user_id", "amount").to_dicts()
    response = context.resources["fraud_api"].post("/v1/score", json={"items": items})
    response.raise_for_status()
    scored = response.json()["items"]
    if [item["user_id"] for item in scored] != events["user_id"].to_list():
        raise ValueError(
            f"the API did not answer one item per event, in order "
            f"({len(scored)} items for {len(items)} events)"
        )
    return events.select("user_id", "timestamp").with_columns(
        pl.Series("fraud_score", [item["score"] for item in scored], dtype=pl.Float64)
    )


transaction = RequestSource(schema=[Field("user_id", String), Field("amount", Float64)])


@realtime_feature_view(
    sources=[transaction],
    mode="python",
    features=[Attribute("fraud_score", Float64)],
    resource_providers={"fraud_api": fraud_api},
    timeout=timedelta(seconds=2),
    cache=Cache(ttl=timedelta(minutes=1)),
)
def fraud_score_now(transaction: dict[str, Any], context) -> dict[str, Any]:
    """The batch view's call for one transaction, at request time."""
    response = context.resources["fraud_api"].post("/v1/score", json=transaction)
    response.raise_for_status()
    return {"fraud_score": response.json()["score"]}


fraud = FeatureService(name="fraud", features=[fraud_score_now])
