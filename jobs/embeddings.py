"""Text embeddings of user events through the OpenAI API: Tecton's API Resources example, made real.

Run it (with the local mock API from `fixtures/`, which `make demo` starts):

    export OPENAI_BASE_URL=http://127.0.0.1:PORT/v1
    export RIVULET_SECRET_OPENAI_EMBEDDINGS__OPEN_AI=any-token
    rivulet backfill jobs/embeddings.py --start 2024-10-26 --end 2024-11-09

Serve its realtime view (`make serve` does all of it):

    rivulet serve jobs/embeddings.py --port 8080
    curl -s localhost:8080/api/v1/feature-service/get-features -d \
      '{"params": {"featureServiceName": "realtime_embedding",
                   "requestContextMap": {"input": "hello"}}}'
"""

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from engine import (
    Array,
    Attribute,
    BatchSource,
    Entity,
    Environment,
    Field,
    FileConfig,
    Float32,
    GoldenTest,
    RequestSource,
    Secret,
    String,
    batch_feature_view,
    realtime_feature_view,
    resource_provider,
)

EVENTS = Path(__file__).resolve().parent.parent / "fixtures" / "data" / "events"
MODEL = "text-embedding-3-small"

events = BatchSource(
    name="events",
    batch_config=FileConfig(uri=str(EVENTS), file_format="parquet", timestamp_field="timestamp"),
)
user = Entity(name="user_id", join_keys=[Field("user_id", String)])
# `rivulet test` backfills one day and compares it with fixtures/golden/embeddings/.
golden = GoldenTest(
    start=datetime(2024, 10, 26),
    end=datetime(2024, 10, 27),
    golden_dir=EVENTS.parents[1] / "golden" / "embeddings",
)
openai_env = Environment(name="openai_env", requirements=["openai>=1.50"])


@resource_provider(
    tags={"environment": "staging"},
    owner="features@example.com",
    secrets={"open_ai_key": Secret(scope="openai_embeddings", key="open_ai")},
)
def open_ai_client(context):
    from openai import OpenAI

    # The base URL comes from OPENAI_BASE_URL; Rivulet owns retries, so the SDK makes one attempt.
    return OpenAI(api_key=context.secrets["open_ai_key"], max_retries=0)


@batch_feature_view(
    name="text_embedding",
    mode="python",
    sources=[events],
    entities=[user],
    batch_schedule=timedelta(days=1),
    feature_start_time=datetime(2024, 10, 26),
    timestamp_field="timestamp",
    features=[Attribute("embedding", Array(Float32))],
    resource_providers={"openai": open_ai_client},
    environment="openai_env",
    offline=True,
)
def text_embedding(input_map, context):
    """One API call per row, as in Tecton; Rivulet runs many rows' calls at once."""
    openai = context.resources["openai"]
    response = openai.embeddings.create(input=input_map["text"], model=MODEL)
    return {"embedding": response.data[0].embedding}


@batch_feature_view(
    name="text_embedding_batched",
    mode="polars",
    sources=[events],
    entities=[user],
    batch_schedule=timedelta(days=1),
    feature_start_time=datetime(2024, 10, 26),
    timestamp_field="timestamp",
    features=[Attribute("embedding", Array(Float32))],
    resource_providers={"openai": open_ai_client},
    environment="openai_env",
    micro_batch_size=100,
)
def text_embedding_batched(events: pl.DataFrame, context) -> pl.DataFrame:
    """One API call per micro-batch of 100 texts: the same features, far fewer requests."""
    openai = context.resources["openai"]
    response = openai.embeddings.create(input=events["text"].to_list(), model=MODEL)
    vectors = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
    return events.select("user_id", "timestamp").with_columns(
        pl.Series("embedding", vectors, dtype=pl.List(pl.Float32))
    )


input_request = RequestSource(schema=[Field("input", String)])


@realtime_feature_view(
    sources=[input_request],
    mode="python",
    # Tecton's page declares String here, yet an embedding is a list of floats.
    features=[Attribute("embedding", Array(Float32))],
    resource_providers={"openai": open_ai_client},
)
def realtime_embedding(input_request, context):
    """The same call at request time: one client per server process, shared by requests."""
    openai = context.resources["openai"]
    response = openai.embeddings.create(input=input_request["input"], model=MODEL)
    return {"embedding": response.data[0].embedding}
