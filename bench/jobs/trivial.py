"""Benchmark job: a python-mode transform that does next to nothing (engine overhead only)."""

import os
from datetime import datetime

from bench.jobs import features
from engine import (
    Attribute,
    BatchSource,
    Entity,
    Field,
    FileConfig,
    Float64,
    String,
    batch_feature_view,
)

events = BatchSource(
    name="events",
    batch_config=FileConfig(uri=os.environ["BENCH_EVENTS"], timestamp_field="timestamp"),
)
user = Entity(name="user", join_keys=[Field("user_id", String)])


@batch_feature_view(
    name="doubled",
    mode="python",
    sources=[events],
    entities=[user],
    batch_schedule="1d",
    feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("amount_x2", Float64)],
)
def doubled(row):
    return features.trivial(row)
