"""Benchmark job: the seed's batch view (tests/jobs/tecton_seed.py) over the bundled events.

As users run it: python mode, one `embeddings.create` per row, the real openai client (its
own retries off) pointed at MOCK_API_URL, default concurrency; the feature declared as what
the transform returns. Its batch_schedule is BENCH_SCHEDULE ("daily", the seed's, or "hourly").
"""

import os
from datetime import datetime
from pathlib import Path

from engine import (
    Array,
    Attribute,
    BatchSource,
    Entity,
    Field,
    FileConfig,
    Float32,
    String,
    batch_feature_view,
    resource_provider,
)

EVENTS = Path(__file__).resolve().parents[2] / "fixtures" / "data" / "events"
ds = BatchSource(
    name="events", batch_config=FileConfig(uri=str(EVENTS), timestamp_field="timestamp")
)


@resource_provider
def open_ai_client():
    from openai import OpenAI

    return OpenAI(api_key="bench", base_url=os.environ["MOCK_API_URL"] + "/v1", max_retries=0)


entity = Entity(name="user_id", join_keys=[Field("user_id", String)])


@batch_feature_view(
    name="bfv",
    mode="python",
    sources=[ds],
    entities=[entity],
    batch_schedule=os.environ.get("BENCH_SCHEDULE", "daily"),
    feature_start_time=datetime(2024, 10, 26),
    timestamp_field="timestamp",
    features=[Attribute("embedding", Array(Float32))],
    resource_providers={"openai": open_ai_client},
    offline=True,
)
def batch_embedding(input_map, context):
    model = "text-embedding-3-small"
    openai = context.resources["openai"]
    response = openai.embeddings.create(input=input_map["text"], model=model)
    return {"embedding": response.data[0].embedding}
