"""Declarations validate themselves when made, and a job file that declares badly is named."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import engine
from engine import (
    Attribute,
    BatchFeatureView,
    BatchSource,
    Entity,
    Environment,
    Field,
    FileConfig,
    Float64,
    Int64,
    RealtimeFeatureView,
    RequestSource,
    Secret,
    String,
    batch_feature_view,
    resource_provider,
)
from engine.errors import DefinitionError, JobLoadError, RivuletError
from engine.plan.job import load_job
from tests.conftest import REPO

EVENTS = BatchSource(
    name="events", batch_config=FileConfig(uri="events.parquet", timestamp_field="timestamp")
)
USER = Entity(name="user", join_keys=[Field("user_id", String)])


def count_words(row: dict[str, Any]) -> dict[str, Any]:
    return {"n_words": len(row["text"].split())}


def declare(function: Callable[..., Any] = count_words, **overrides: Any) -> BatchFeatureView:
    """Declare a valid batch feature view named 'view', with `overrides` applied."""
    settings: dict[str, Any] = {
        "name": "view",
        "mode": "python",
        "sources": [EVENTS],
        "entities": [USER],
        "features": [Attribute("n_words", Int64)],
        "batch_schedule": timedelta(days=1),
        "feature_start_time": datetime(2024, 10, 26),
    }
    return batch_feature_view(**(settings | overrides))(function)


def declaration_error(declaration: Callable[[], object]) -> str:
    """The message of the DefinitionError `declaration()` raises."""
    with pytest.raises(DefinitionError) as caught:
        declaration()
    return str(caught.value)


@resource_provider
def client() -> object:
    return object()


# Declaring in Python: each mistake is a DefinitionError naming the view, the culprit, the fix.


def test_unknown_mode_is_named_with_the_supported_ones() -> None:
    message = declaration_error(lambda: declare(mode="spark_sql"))
    assert "Feature view 'view'" in message
    assert "mode 'spark_sql'" in message
    assert "python, pandas, polars, pyarrow" in message


def two_inputs(row: dict, other: dict) -> dict:
    return {}


def no_inputs(context: object) -> dict:
    return {}


@pytest.mark.parametrize(
    ("transform", "described"),
    [
        (two_inputs, "parameter 'other' matches no source; its sources are events"),
        (no_inputs, "0 input parameter(s) (none) besides `context`, but 1 source(s)"),
    ],
)
def test_transform_parameters_must_match_the_sources(
    transform: Callable[..., Any], described: str
) -> None:
    message = declaration_error(lambda: declare(transform))
    assert "Feature view 'view'" in message
    assert described in message
    assert "one parameter per source" in message


@pytest.mark.parametrize("dtype", [float, "Float64"], ids=["python-float", "string"])
def test_a_feature_type_must_be_a_rivulet_type(dtype: object) -> None:
    message = declaration_error(lambda: declare(features=[Attribute("x", dtype)]))  # type: ignore[arg-type]
    assert "Feature view 'view'" in message
    assert f"feature 'x' has unsupported type {dtype!r}" in message
    assert "use String, Int32, Int64, Float32, Float64, Bool, Timestamp or Array(...)" in message


def uses_missing_resource(row: dict, context: Any) -> dict:
    return {"n_words": context.resources["missing"].count(row["text"])}


def gets_missing_resource(row: dict, context: Any) -> dict:
    return {"n_words": context.resources.get("missing").count(row["text"])}


@pytest.mark.parametrize("transform", [uses_missing_resource, gets_missing_resource])
def test_a_resource_the_transform_uses_must_be_declared(transform: Callable[..., Any]) -> None:
    message = declaration_error(lambda: declare(transform, resource_providers={"client": client}))
    assert "Feature view 'view'" in message
    assert "uses resource 'missing'" in message
    assert "resource_providers declares client" in message


def test_a_resource_provider_must_be_decorated() -> None:
    def plain() -> object:
        return object()

    message = declaration_error(lambda: declare(resource_providers={"client": plain}))
    assert "Feature view 'view'" in message
    assert "resource 'client' is function" in message
    assert "@resource_provider" in message


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("n_words", Float64), ("user_id", String), ("timestamp", Int64)],
    ids=["feature", "join-key", "timestamp"],
)
def test_feature_names_must_be_distinct_from_each_other_and_the_keys(
    name: str, dtype: object
) -> None:
    features = [Attribute("n_words", Int64), Attribute(name, dtype)]  # type: ignore[arg-type]
    message = declaration_error(lambda: declare(features=features))
    assert "Feature view 'view'" in message
    assert f"the name '{name}' is used twice" in message


@pytest.mark.parametrize("setting", ["batch_schedule", "ttl"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fortnightly", "such as timedelta(days=1), '1d' or '6h'"),
        ("1 day", "'1d'"),
        ("0d", "positive"),
    ],
    ids=["word", "spaced", "zero"],
)
def test_a_bad_duration_names_its_setting(setting: str, value: str, expected: str) -> None:
    message = declaration_error(lambda: declare(**{setting: value}))
    assert "Feature view 'view'" in message
    assert setting in message
    assert f"'{value}'" in message
    assert expected in message


@pytest.mark.parametrize("setting", ["micro_batch_size", "concurrency"])
@pytest.mark.parametrize("value", [0, -5, 2.5])
def test_batch_sizes_must_be_positive_integers(setting: str, value: object) -> None:
    message = declaration_error(lambda: declare(**{setting: value}))
    assert "Feature view 'view'" in message
    assert f"{setting} must be a positive integer, not {value!r}" in message


def test_a_resource_provider_takes_at_most_context() -> None:
    def two(context: object, extra: object) -> object:
        return object()

    message = declaration_error(lambda: resource_provider(two))
    assert "Resource provider 'two'" in message
    assert "no parameters or just `context`" in message
    assert "takes (context, extra)" in message


def test_an_unknown_argument_is_named() -> None:
    message = declaration_error(lambda: declare(batch_schedul="1d"))
    assert "Feature view 'view'" in message
    assert "unknown argument(s) batch_schedul" in message


# What declarations hold.


def test_secret_environment_variable_name() -> None:
    secret = Secret(scope="openai_embeddings", key="open_ai")
    assert secret.env_var == "RIVULET_SECRET_OPENAI_EMBEDDINGS__OPEN_AI"
    assert str(secret) == "openai_embeddings/open_ai"


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("1d", timedelta(days=1)),
        ("6h", timedelta(hours=6)),
        ("30min", timedelta(minutes=30)),
        (" 2w ", timedelta(weeks=2)),
    ],
)
def test_batch_schedule_strings_are_parsed(text: str, duration: timedelta) -> None:
    view = declare(batch_schedule=text, ttl=text)
    assert view.batch_schedule == duration
    assert view.ttl == duration


def test_feature_start_time_is_read_as_utc() -> None:
    naive = declare(feature_start_time=datetime(2024, 10, 26, 6))
    assert naive.feature_start_time == datetime(2024, 10, 26, 6, tzinfo=UTC)
    assert naive.feature_start_time.utcoffset() == timedelta(0)
    paris = timezone(timedelta(hours=2))
    aware = declare(feature_start_time=datetime(2024, 10, 26, 8, tzinfo=paris))
    assert aware.feature_start_time == datetime(2024, 10, 26, 6, tzinfo=UTC)
    assert aware.feature_start_time.utcoffset() == timedelta(0)


def test_definitions_are_frozen_and_hashable() -> None:
    view = declare(resource_providers={"client": client})
    definitions: list[object] = [
        view,
        client,
        EVENTS,
        EVENTS.batch_config,
        USER,
        Attribute("n_words", Int64),
        Secret("s", "k"),
        Environment("env", ["polars"]),
        RequestSource(schema=[Field("input", String)]),
    ]
    for definition in definitions:
        field = dataclasses.fields(definition)[0].name  # type: ignore[arg-type]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(definition, field, "changed")
        assert {definition: 1}[definition] == 1
    # Value-like definitions compare and hash by value.
    assert hash(Attribute("n", Int64)) == hash(Attribute("n", Int64))
    assert hash(Entity("user", ["user_id"])) == hash(USER)
    assert view.features == (Attribute("n_words", Int64),)


# Job files.


def test_the_tecton_seed_example_declares() -> None:
    job = load_job(REPO / "tests" / "jobs" / "tecton_seed.py")

    assert list(job.feature_views) == ["bfv"]
    bfv = job.feature_views["bfv"]
    assert bfv.features == (Attribute("text", String),)  # rejected only when it runs
    assert [(key, p.name) for key, p in bfv.resource_providers] == [("openai", "open_ai_client")]
    provider = bfv.resource_providers[0][1]
    assert provider.secrets == (("open_ai_key", Secret("openai_embeddings", "open_ai")),)
    assert provider.takes_context and provider.owner == "tom@tecton.ai"
    assert bfv.environment == "openai_env" and bfv.timestamp_field == "timestamp"
    assert bfv.takes_context and not bfv.is_async

    assert list(job.realtime_views) == ["realtime_embedding"]
    realtime = job.realtime_views["realtime_embedding"]
    assert isinstance(realtime, RealtimeFeatureView)
    assert realtime.features == (Attribute("embedding", String),)
    assert realtime.resource_providers[0][1] is provider


BAD_DECLARATIONS = {
    "mode": ('mode="spark_sql"', "def view(row):", "mode 'spark_sql'"),
    "parameters": ('mode="python"', "def view(row, other):", "parameter 'other' matches no source"),
    "resource": (
        'mode="python"',
        "def view(row, context):\n    context.resources['missing']",
        "uses resource 'missing'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DECLARATIONS))
def test_a_job_that_declares_badly_names_job_and_view(
    case: str, write_job: Callable[..., Path]
) -> None:
    setting, signature, expected = BAD_DECLARATIONS[case]
    job = write_job(
        f"""
@batch_feature_view(name="bad_view", {setting}, sources=[events], entities=[user],
    features=[Attribute("n", Int64)], batch_schedule="1d",
    feature_start_time=datetime(2024, 10, 26))
"""
        + signature
        + "\n    return {'n': 1}\n",
        name="bad_job",
    )
    with pytest.raises(DefinitionError) as caught:
        load_job(job)
    message = str(caught.value)
    assert "In job 'bad_job'" in message
    assert "Feature view 'bad_view'" in message
    assert expected in message


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("from engine import NotAThing", "ImportError"),
        ("import no_such_module_for_rivulet", "ModuleNotFoundError"),
        ("total = undefined_name + 1", "NameError"),
    ],
)
def test_a_job_that_raises_on_import_names_job_and_line(
    line: str, error: str, write_job: Callable[..., Path]
) -> None:
    job = write_job(f"x = 1\n{line}\ny = 2\n", name="broken_job")
    lineno = job.read_text().splitlines().index(line) + 1
    with pytest.raises(JobLoadError) as caught:
        load_job(job)
    message = str(caught.value)
    assert f"Job 'broken_job' ({job})" in message
    assert f"{error} at line {lineno}:" in message
    assert "Traceback" not in message and 'File "' not in message
    assert "\n" not in message


def test_a_missing_job_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(JobLoadError, match="does not exist") as caught:
        load_job(missing)
    assert str(missing) in str(caught.value)


FINGERPRINTED = """
@batch_feature_view(name="view", mode="python", sources=[events], entities=[user],
    features=[Attribute("n", Int64)], batch_schedule="1d",
    feature_start_time=datetime(2024, 10, 26))
def view(row):
    return {{"n": {body}}}
"""


def test_fingerprint_follows_the_transform_body(write_job: Callable[..., Path]) -> None:
    def fingerprint(name: str, body: str) -> str:
        return (
            load_job(write_job(FINGERPRINTED.format(body=body), name=name))
            .feature_views["view"]
            .fingerprint
        )

    original = fingerprint("original", 'len(row["text"])')
    assert fingerprint("unchanged", 'len(row["text"])') == original
    assert fingerprint("changed", 'len(row["text"].split())') != original
    assert len(original) == 16 and int(original, 16) >= 0


# Errors and the public surface.


def subclasses(cls: type) -> list[type]:
    """`cls` and every class below it, wherever in the engine it is defined."""
    return [cls, *(sub for direct in cls.__subclasses__() for sub in subclasses(direct))]


ERROR_CLASSES = subclasses(RivuletError)


def test_the_error_tree_is_complete() -> None:
    expected = {"Definition", "JobLoad", "Settings", "Secret", "Source", "Resource", "Transform"}
    expected |= {"Output", "Rivulet"}
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {f"{name}Error" for name in expected} | {"EnvironmentMismatch"} <= names
    assert all(cls.__module__.startswith("engine.") for cls in ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_errors_survive_pickling(cls: type[RivuletError]) -> None:
    message = f"Feature view 'view': {cls.__name__} happened; fix it."
    copy = pickle.loads(pickle.dumps(cls(message)))
    assert type(copy) is cls
    assert copy.message == str(copy) == message
    assert copy.kind == cls.kind


def test_a_raised_error_survives_pickling(write_job: Callable[..., Path]) -> None:
    job = write_job("total = undefined_name + 1\n", name="broken_job")
    with pytest.raises(JobLoadError) as caught:
        load_job(job)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is JobLoadError
    assert str(copy) == str(caught.value) and "broken_job" in str(copy)


def test_public_names_are_sorted_and_importable() -> None:
    assert engine.__all__ == sorted(set(engine.__all__))
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name
    namespace: dict[str, Any] = {}
    exec("from engine import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == engine.__all__
