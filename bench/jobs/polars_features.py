"""Benchmark job: CPU-bound polars-mode features over BENCH_EVENTS, no I/O besides files."""

from datetime import datetime

import polars as pl

from bench.jobs import features
from bench.jobs.sources import events_source, user
from engine import (
    Attribute,
    Float64,
    Int64,
    String,
    batch_feature_view,
)

events = events_source()


@batch_feature_view(
    name="amount_features",
    mode="polars",
    sources=[events],
    entities=[user],
    batch_schedule="1d",
    feature_start_time=datetime(2024, 10, 26),
    features=[
        Attribute("amount_x2", Float64),
        Attribute("amount_log", Float64),
        Attribute("text_length", Int64),
        Attribute("text_upper", String),
    ],
)
def amount_features(df: pl.DataFrame) -> pl.DataFrame:
    return features.amount_features(df)
