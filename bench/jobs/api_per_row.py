"""Benchmark job: one HTTP call per row to the mock API, python mode, as Tecton would run it.

Reads BENCH_EVENTS (a Parquet file of events) and calls MOCK_API_URL/v1/score per row with
the client named by BENCH_CLIENT ("stdlib", the default; "httpx"; or "httpx-async" or
"streams", which make the transform `async def`), BENCH_CONCURRENCY calls at once (default 64).
"""

import os
from datetime import datetime

from bench.jobs.clients import session
from bench.jobs.sources import events_source, user
from engine import (
    Attribute,
    Float64,
    batch_feature_view,
    resource_provider,
)

events = events_source()

CLIENT = os.environ.get("BENCH_CLIENT", "stdlib")
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "64"))


@resource_provider
def scoring_api():
    return session(CLIENT, os.environ["MOCK_API_URL"], CONCURRENCY)


def payload(row):
    return {"user_id": row["user_id"], "amount": row["amount"]}


def score(row, context):
    """One request per row; the API answers after its configured latency."""
    return {"score": context.resources["api"].post("/v1/score", payload(row))["score"]}


async def score_async(row, context):
    """The same call, awaited on the worker's event loop."""
    answer = await context.resources["api"].post("/v1/score", payload(row))
    return {"score": answer["score"]}


scored = batch_feature_view(
    name="scored",
    mode="python",
    sources=[events],
    entities=[user],
    batch_schedule="1d",
    feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("score", Float64)],
    resource_providers={"api": scoring_api},
    concurrency=CONCURRENCY,
)(score_async if CLIENT in ("httpx-async", "streams") else score)
