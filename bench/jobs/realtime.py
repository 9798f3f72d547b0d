"""Benchmark job: the seed's realtime view (jobs/embeddings.py) and the same view with a cache,
through the real openai client at OPENAI_BASE_URL."""

from datetime import timedelta

from engine import Array, Attribute, Cache, Float32, realtime_feature_view
from jobs.embeddings import input_request, open_ai_client, realtime_embedding


@realtime_feature_view(
    sources=[input_request],
    mode="python",
    features=[Attribute("embedding", Array(Float32))],
    resource_providers={"openai": open_ai_client},
    cache=Cache(ttl=timedelta(minutes=5)),
)
def cached_embedding(input_request, context):
    """The seed's transform, its answers kept five minutes by input."""
    return realtime_embedding.function(input_request, context)
