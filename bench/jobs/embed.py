"""Benchmark job: embeddings of BENCH_EVENTS' texts from MOCK_API_URL, per row and batched.

Two views with the same features and client: `per_row` (python mode, one request per row)
and `batched` (polars mode, one request per micro-batch of 100 texts).
"""

import os
from datetime import datetime

import polars as pl

from bench.jobs.clients import JsonSession
from bench.jobs.sources import events_source, user
from engine import (
    Array,
    Attribute,
    Float32,
    batch_feature_view,
    resource_provider,
)

events = events_source()

MODEL = "text-embedding-3-small"


@resource_provider
def embeddings_api():
    return JsonSession(os.environ["MOCK_API_URL"])


def embed(api, texts):
    answer = api.post("/v1/embeddings", {"input": texts, "model": MODEL})
    return [item["embedding"] for item in sorted(answer["data"], key=lambda item: item["index"])]


VIEW = {
    "sources": [events],
    "entities": [user],
    "batch_schedule": "1d",
    "feature_start_time": datetime(2024, 10, 26),
    "features": [Attribute("embedding", Array(Float32))],
    "resource_providers": {"api": embeddings_api},
}


@batch_feature_view(name="per_row", mode="python", **VIEW)
def per_row(row, context):
    return {"embedding": embed(context.resources["api"], [row["text"]])[0]}


@batch_feature_view(name="batched", mode="polars", micro_batch_size=100, **VIEW)
def batched(df: pl.DataFrame, context) -> pl.DataFrame:
    vectors = embed(context.resources["api"], df["text"].to_list())
    return df.select("user_id", "timestamp").with_columns(
        pl.Series("embedding", vectors, dtype=pl.List(pl.Float32))
    )
