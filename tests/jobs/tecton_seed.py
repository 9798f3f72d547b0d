"""Tecton's API Resources example, verbatim but for its imports (and `ds`, which it leaves
undefined). It declares `Attribute("text", String)` yet returns `embedding`, so Rivulet
accepts the declarations and rejects the output at run time."""

from datetime import datetime, timedelta
from pathlib import Path

from engine import (
    Attribute,
    BatchSource,
    Entity,
    Field,
    FileConfig,
    RequestSource,
    Secret,
    String,
    batch_feature_view,
    realtime_feature_view,
    resource_provider,
)

EVENTS = Path(__file__).resolve().parents[2] / "fixtures" / "data" / "events"
ds = BatchSource(
    name="events", batch_config=FileConfig(uri=str(EVENTS), timestamp_field="timestamp")
)

# --- the seed, verbatim from here on ---


@resource_provider(
    tags={"environment": "staging"},
    owner="tom@tecton.ai",
    secrets={
        "open_ai_key": Secret(scope="openai_embeddings", key="open_ai"),
    },
)
def open_ai_client(context):
    from openai import OpenAI

    client = OpenAI(api_key=context.secrets["open_ai_key"])
    return client


entity = Entity(name="user_id", join_keys=[Field("user_id", String)])


@batch_feature_view(
    name="bfv",
    mode="python",
    sources=[ds],
    entities=[entity],
    batch_schedule=timedelta(days=1),
    feature_start_time=datetime(2024, 10, 26),
    timestamp_field="timestamp",
    features=[
        Attribute("text", String),
    ],
    resource_providers={
        "openai": open_ai_client,
    },
    environment="openai_env",
    offline=True,
)
def batch_embedding(input_map, context):
    model = "text-embedding-3-small"
    openai = context.resources["openai"]
    response = openai.embeddings.create(input=input_map["text"], model=model)
    return {"embedding": response.data[0].embedding}


input_request = RequestSource(schema=[Field("input", String)])


@realtime_feature_view(
    sources=[input_request],
    mode="python",
    features=[Attribute("embedding", String)],
    resource_providers={"openai": open_ai_client},
)
def realtime_embedding(input_request, context):
    openai = context.resources["openai"]
    response = openai.embeddings.create(
        input=input_request["input"], model="text-embedding-ada-002"
    )
    return {"embedding": response.data[0].embedding}
