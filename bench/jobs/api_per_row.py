"""Benchmark job: one HTTP call per row to the mock API, python mode, as Tecton would run it.

Reads BENCH_EVENTS (a Parquet file of events) and calls MOCK_API_URL/v1/score per row.
"""

import os
from datetime import datetime

from engine import (
    Attribute,
    BatchSource,
    Entity,
    Field,
    FileConfig,
    Float64,
    String,
    batch_feature_view,
    resource_provider,
)

events = BatchSource(
    name="events",
    batch_config=FileConfig(uri=os.environ["BENCH_EVENTS"], timestamp_field="timestamp"),
)
user = Entity(name="user", join_keys=[Field("user_id", String)])


@resource_provider
def scoring_api():
    import httpx

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    client = httpx.Client(base_url=os.environ["MOCK_API_URL"], limits=limits, timeout=30)
    yield client
    client.close()


def score(row, context):
    """One request per row; the API answers after its configured latency."""
    response = context.resources["api"].post(
        "/v1/score", json={"user_id": row["user_id"], "amount": row["amount"]}
    )
    response.raise_for_status()
    return {"score": response.json()["score"]}


scored = batch_feature_view(
    name="scored",
    mode="python",
    sources=[events],
    entities=[user],
    batch_schedule="1d",
    feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("score", Float64)],
    resource_providers={"api": scoring_api},
    concurrency=int(os.environ.get("BENCH_CONCURRENCY", "64")),
)(score)
