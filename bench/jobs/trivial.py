"""Benchmark job: a python-mode transform that does next to nothing (engine overhead only)."""

from datetime import datetime

from bench.jobs import features
from bench.jobs.sources import events_source, user
from engine import (
    Attribute,
    Float64,
    batch_feature_view,
)

events = events_source()


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
