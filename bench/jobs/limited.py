"""Benchmark job: one call per row to an API whose limit is declared, as a user writes it.

Reads BENCH_EVENTS and calls MOCK_API_URL/v1/score per row with `httpx.Client`; a 429 is
an `httpx.HTTPStatusError` (`raise_for_status`), which Rivulet retries after a backoff.
The limit, RATE_LIMIT requests per second (default 100) with a tenth of it as burst, is
the provider's `RateLimit`.
"""

import os
from datetime import datetime

from bench.jobs.sources import events_source, user
from engine import Attribute, Float64, RateLimit, batch_feature_view, resource_provider

events = events_source()
RATE = float(os.environ.get("RATE_LIMIT", "100"))


@resource_provider(rate_limit=RateLimit(requests_per_second=RATE, burst=max(1, round(RATE / 10))))
def scoring_api():
    import httpx

    client = httpx.Client(base_url=os.environ["MOCK_API_URL"], timeout=30)
    yield client
    client.close()


@batch_feature_view(
    name="scored",
    mode="python",
    sources=[events],
    entities=[user],
    batch_schedule="1d",
    feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("score", Float64)],
    resource_providers={"api": scoring_api},
    concurrency=16,
)
def scored(row, context):
    response = context.resources["api"].post(
        "/v1/score", json={"user_id": row["user_id"], "amount": row["amount"]}
    )
    response.raise_for_status()
    return {"score": response.json()["score"]}
