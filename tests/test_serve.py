"""Realtime views in-process: definitions, run_transformation, FeatureServer, cache, deadlines."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from engine import (
    Array,
    Attribute,
    Cache,
    FeatureServer,
    FeatureService,
    Field,
    Float32,
    Float64,
    Int64,
    RequestSource,
    String,
    realtime_feature_view,
    resource_provider,
)
from engine.errors import BadRequest, DefinitionError, OutputError, TransformError, ViewTimeout
from engine.plan.job import load_job
from engine.serve.cache import AnswerCache
from fixtures.mock_api import MockAPI, embed
from tests.conftest import REPO

EMBEDDINGS = REPO / "jobs" / "embeddings.py"
text = RequestSource(schema=[Field("text", String)])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeEmbeddings:
    """What `context.resources["openai"]` offers, without a network: counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.embeddings = self

    def create(self, input: str, model: str) -> object:
        self.calls += 1
        item = type("Item", (), {"embedding": [float(len(input)), 0.5]})
        return type("Response", (), {"data": [item]})


@resource_provider()
def fake_client() -> FakeEmbeddings:
    return FakeEmbeddings()


@realtime_feature_view(
    sources=[text],
    mode="python",
    features=[Attribute("embedding", Array(Float32)), Attribute("length", Int64)],
    resource_providers={"openai": fake_client},
)
def embedded(text, context):
    response = context.resources["openai"].embeddings.create(input=text["text"], model="m")
    return {"embedding": response.data[0].embedding, "length": len(text["text"])}


def test_run_transformation_calls_the_transform_with_the_resources_given() -> None:
    fake = FakeEmbeddings()
    features = embedded.run_transformation({"text": {"text": "hello"}}, resources={"openai": fake})
    assert features == {"embedding": [5.0, 0.5], "length": 5}
    assert fake.calls == 1
    assert embedded.test_run({"text": {"text": "hi"}}, resources={"openai": fake})["length"] == 2


def test_run_transformation_builds_resources_it_is_not_given() -> None:
    assert embedded.run_transformation({"text": {"text": "abc"}})["embedding"] == [3.0, 0.5]


def test_run_transformation_in_pandas_mode_takes_and_gives_frames() -> None:
    pd = pytest.importorskip("pandas")

    @realtime_feature_view(sources=[text], mode="pandas", features=[Attribute("n", Int64)])
    def words(text):
        return pd.DataFrame({"n": text["text"].str.split().str.len()})

    result = words.run_transformation({"text": pd.DataFrame({"text": ["a b c"]})})
    assert isinstance(result, pd.DataFrame) and result.to_dict("records") == [{"n": 3}]


def test_run_transformation_names_what_it_lacks() -> None:
    with pytest.raises(BadRequest, match=r"needs input_data\['text'\]"):
        embedded.run_transformation({"txt": {"text": "x"}})
    with pytest.raises(BadRequest, match="declares no resource 'model'"):
        embedded.run_transformation({"text": {"text": "x"}}, resources={"model": object()})
    with pytest.raises(BadRequest, match="lacks field 'text' \\(String\\)"):
        embedded.run_transformation({"text": {}})
    with pytest.raises(BadRequest, match=r"field 'text' is int .* needs String"):
        embedded.run_transformation({"text": {"text": 3}})


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ({"embedding": "no", "length": 1}, "feature 'embedding' as str, but declares Array"),
        ({"embedding": [1.0]}, "did not return feature 'length' \\(Int64\\)"),
        ({"embedding": [1.0], "length": 1, "x": 2}, "returned feature 'x', which it does not"),
        ({"embedding": [1.0], "length": True}, "feature 'length' as bool, but declares Int64"),
        ([1, 2], "returned list, not a dict of features"),
    ],
)
def test_a_wrong_answer_names_the_view_feature_and_types(returned: object, message: str) -> None:
    @realtime_feature_view(
        sources=[text],
        mode="python",
        features=[Attribute("embedding", Array(Float32)), Attribute("length", Int64)],
    )
    def wrong(text):
        return returned

    with pytest.raises(OutputError, match=message) as caught:
        wrong.run_transformation({"text": {"text": "x"}})
    assert "Feature view 'wrong'" in str(caught.value)


def test_definitions_are_checked_when_declared() -> None:
    def declare(**changes: object) -> Callable:
        settings = {"sources": [text], "mode": "python", "features": [Attribute("n", Int64)]}
        return realtime_feature_view(**(settings | changes))

    with pytest.raises(DefinitionError, match="on_error 'skip'; a realtime view uses"):
        declare(on_error="skip")(lambda text: {})
    with pytest.raises(DefinitionError, match="mode 'polars'"):
        declare(mode="polars")(lambda text: {})
    with pytest.raises(DefinitionError, match="takes 2 input parameter"):
        declare()(lambda text, other: {})
    with pytest.raises(DefinitionError, match="cache must be a Cache"):
        declare(cache=60)(lambda text: {})
    with pytest.raises(DefinitionError, match="unknown argument\\(s\\) online"):
        declare(online=True)(lambda text: {})
    other = RequestSource(schema=[Field("text", Int64)])
    with pytest.raises(DefinitionError, match="field 'text' is declared as both String and Int64"):
        declare(sources=[text, other])(lambda a, b: {})
    with pytest.raises(DefinitionError, match="Cache: ttl"):
        Cache(ttl=-1)


def test_a_feature_service_lists_realtime_views_once() -> None:
    with pytest.raises(DefinitionError, match="lists view 'embedded' twice"):
        FeatureService("s", features=[embedded, embedded])
    with pytest.raises(DefinitionError, match="lists no features"):
        FeatureService("s", features=[])


def test_the_seed_view_answers_with_embeddings_over_the_real_openai_client(
    openai_env: MockAPI,
) -> None:
    with FeatureServer(EMBEDDINGS) as server:
        vector = server.get_features("realtime_embedding", request_context={"input": "hello"})
        assert server.runtime.stats.builds["open_ai_client"] == 1
    [feature] = vector.features
    assert (feature.name, feature.status) == ("realtime_embedding.embedding", "PRESENT")
    assert feature.value == pytest.approx(embed("hello"), rel=1e-6)
    assert server.runtime.stats.teardowns["open_ai_client"] == 1


SEED = REPO / "tests" / "jobs" / "tecton_seed.py"  # Tecton's page verbatim, imports aside


def test_the_seed_view_as_written_gets_an_error_naming_view_feature_and_types(
    openai_env: MockAPI,
) -> None:
    with FeatureServer(SEED) as server, pytest.raises(OutputError) as caught:
        server.get_features("realtime_embedding", request_context={"input": "hello"})
    assert str(caught.value) == (
        "Feature view 'realtime_embedding' returned feature 'embedding' as list of float, "
        "but declares String."
    )
    assert (caught.value.view, caught.value.feature) == ("realtime_embedding", "embedding")


@pytest.mark.anyio
async def test_concurrent_identical_requests_make_one_call(tmp_path: Path) -> None:
    release = asyncio.Event()
    calls: list[str] = []

    @realtime_feature_view(
        sources=[text], mode="python", features=[Attribute("n", Int64)], cache=Cache(ttl=60)
    )
    async def held(text):
        calls.append(text["text"])
        await release.wait()
        return {"n": len(text["text"])}

    job = load_job(_job_with(tmp_path, "held"))
    job.realtime_views["held"] = held
    job.services.clear()
    async with FeatureServer(job) as server:
        waiting = [
            asyncio.create_task(server.aget_features("held", {"text": "same"})) for _ in range(8)
        ]
        other = asyncio.create_task(server.aget_features("held", {"text": "other"}))
        while len(calls) < 2:  # both distinct calls started; the rest wait on "same"
            await asyncio.sleep(0)
        release.set()
        answers = await asyncio.gather(*waiting, other)
        again = await server.aget_features("held", {"text": "same"})
    assert sorted(calls) == ["other", "same"]
    assert {a.to_dict()["held.n"] for a in answers[:-1]} == {4}
    assert again.to_dict() == {"held.n": 4}
    cache = server.runtime.calls["held"].cache
    assert cache is not None and (cache.misses, cache.hits) == (2, 8)


@pytest.mark.anyio
async def test_a_cached_answer_expires_after_its_ttl_by_the_clock() -> None:
    now = [0.0]
    cache = AnswerCache(Cache(ttl=timedelta(seconds=10), max_entries=2), clock=lambda: now[0])
    computed: list[int] = []

    async def compute() -> int:
        computed.append(1)
        return len(computed)

    assert await cache.get([{"a": 1}], compute) == 1
    now[0] = 9.0
    assert await cache.get([{"a": 1}], compute) == 1
    now[0] = 10.5
    assert await cache.get([{"a": 1}], compute) == 2
    assert (cache.hits, cache.misses) == (1, 2)


@pytest.mark.anyio
async def test_a_failed_call_is_not_cached_and_its_waiters_get_its_error() -> None:
    cache = AnswerCache(Cache(ttl=60))
    attempts: list[int] = []

    async def failing() -> int:
        attempts.append(1)
        raise TransformError("Feature view 'v' failed.")

    for _ in range(2):
        with pytest.raises(TransformError):
            await cache.get([{"a": 1}], failing)
    assert len(attempts) == 2


def _job_with(tmp_path: Path, name: str) -> Path:
    """A job file with one trivial realtime view, for tests that swap in their own views."""
    path = tmp_path / f"{name}_job.py"
    path.write_text(
        "from engine import *\n"
        "@realtime_feature_view(sources=[RequestSource(schema=[Field('text', String)])],\n"
        "                       mode='python', features=[Attribute('n', Int64)])\n"
        f"def {name}(text):\n"
        "    return {'n': 0}\n"
    )
    return path


def test_a_late_view_times_out_or_answers_nulls_when_partial_results_are_allowed(
    tmp_path: Path,
) -> None:
    stuck = threading.Event()

    @realtime_feature_view(
        sources=[text], mode="python", features=[Attribute("score", Float64)], timeout=0.05
    )
    def slow(text):
        stuck.wait(30)
        return {"score": 1.0}

    @realtime_feature_view(sources=[text], mode="python", features=[Attribute("n", Int64)])
    def fast(text):
        return {"n": len(text["text"])}

    job = load_job(_job_with(tmp_path, "fast"))
    job.realtime_views.update(slow=slow, fast=fast)
    job.services["both"] = FeatureService("both", features=[fast, slow])
    try:
        with FeatureServer(job) as server:
            with pytest.raises(ViewTimeout, match="Feature view 'slow' did not answer within"):
                server.get_features("both", {"text": "abc"})
            vector = server.get_features("both", {"text": "abc"}, allow_partial_results=True)
    finally:
        stuck.set()
    statuses = [(f.name, f.value, f.status) for f in vector.features]
    assert statuses == [("fast.n", 3, "PRESENT"), ("slow.score", None, "TIMEOUT")]


def test_an_unknown_service_is_a_404_naming_what_is_served(tmp_path: Path) -> None:
    unknown = "no feature service or realtime feature view 'x'; it serves only"
    with FeatureServer(_job_with(tmp_path, "only")) as server, pytest.raises(BadRequest) as caught:
        server.get_features("x", {"text": "a"})
    assert unknown in str(caught.value) and caught.value.status == 404


def test_the_fraud_job_scores_a_transaction_at_request_time_once_per_ttl(
    mock_api: MockAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fixtures.mock_api import score

    monkeypatch.setenv("FRAUD_API_URL", mock_api.url)
    with FeatureServer(REPO / "jobs" / "fraud_signals.py") as server:
        before = mock_api.stats()["requests"]
        first = server.get_features("fraud", {"user_id": "u1", "amount": 12})
        again = server.get_features("fraud", {"amount": 12.0, "user_id": "u1"})
        other = server.get_features("fraud", {"user_id": "u2", "amount": 12})
        calls = mock_api.stats()["requests"] - before
    assert first.to_dict() == {"fraud_score_now.fraud_score": score("u1", 12.0)} == again.to_dict()
    assert other.to_dict() == {"fraud_score_now.fraud_score": score("u2", 12.0)}
    assert calls == 2  # the repeated transaction came from the cache
