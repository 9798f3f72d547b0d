"""Realtime views for the HTTP serving tests: the seed's embedding view with a provider that
logs each build and teardown, a view whose error quotes a secret, and a service of both.

SERVE_LOG names the file the provider appends "build PID", "teardown PID" and "attempt PID"
lines to; SERVE_FAILS is how many build attempts fail per process ("always": all of them).
"""

import os
from pathlib import Path

from engine import (
    Array,
    Attribute,
    FeatureService,
    Field,
    Float32,
    Int64,
    RequestSource,
    Secret,
    String,
    realtime_feature_view,
    resource_provider,
)

LOG = Path(os.environ["SERVE_LOG"])


def note(event: str) -> None:
    with LOG.open("a") as log:
        log.write(f"{event} {os.getpid()}\n")


@resource_provider(secrets={"key": Secret(scope="mock", key="token")})
def open_ai_client(context):
    from openai import OpenAI

    note("attempt")
    fails = os.environ.get("SERVE_FAILS", "0")
    attempts = LOG.read_text().split("\n").count(f"attempt {os.getpid()}")
    if fails == "always" or attempts <= int(fails):
        raise ConnectionError(f"the model host refused attempt {attempts}")
    client = OpenAI(api_key=context.secrets["key"], max_retries=0)
    note("build")
    yield client
    client.close()
    note("teardown")


input_request = RequestSource(schema=[Field("input", String)])


@realtime_feature_view(
    sources=[input_request],
    mode="python",
    features=[Attribute("embedding", Array(Float32))],
    resource_providers={"openai": open_ai_client},
)
def realtime_embedding(input_request, context):
    openai = context.resources["openai"]
    response = openai.embeddings.create(input=input_request["input"], model="m")
    return {"embedding": response.data[0].embedding}


@realtime_feature_view(
    sources=[RequestSource(schema=[Field("input", String), Field("n", Int64)])],
    mode="python",
    features=[Attribute("length", Int64)],
    secrets={"token": Secret(scope="mock", key="token")},
)
def leaky(request, context):
    if request["n"] < 0:
        raise RuntimeError(f"upstream refused token {context.secrets['token']}")
    return {"length": len(request["input"]) * request["n"]}


both = FeatureService(name="both", features=[realtime_embedding, leaky])
