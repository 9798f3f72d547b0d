"""Batch features served beside realtime ones: jobs/transaction_scoring.py backfilled, then
served over HTTP from its online store (the SQLite default and Redis)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pytest

from engine import (
    Attribute,
    FeatureServer,
    FeatureService,
    Field,
    Float64,
    Int64,
    RequestSource,
    backfill,
    get_historical_features,
    realtime_feature_view,
)
from engine.errors import BadRequest, DefinitionError, SettingsError
from engine.plan.job import load_job
from fixtures.mock_api import MockAPI, score
from tests.conftest import REPO
from tests.test_serve_http import GET_FEATURES, Server

JOB = REPO / "jobs" / "transaction_scoring.py"
METRICS = ["transactions", "mean_amount", "max_amount"]


@pytest.fixture
def scoring(
    mock_api: MockAPI, tmp_path: Path, store_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The job backfilled over the bundled events into a fresh store; returns its folder."""
    monkeypatch.setenv("FRAUD_API_URL", mock_api.url)
    out = tmp_path / "o"
    ran = backfill(JOB, datetime(2024, 10, 26), datetime(2024, 11, 9), output=out,
                   online_store=store_url)  # fmt: skip
    assert ran.ok and ran.rows_by_view == {"user_metrics": 84}  # 6 users, 14 days
    return out


def newest(out: Path, user: str) -> dict[str, Any]:
    """The user's newest committed metrics, by a query written here."""
    return (
        duckdb.sql(
            f"""SELECT timestamp, {", ".join(METRICS)}
        FROM read_parquet('{out}/user_metrics/**/data.parquet', hive_partitioning = false)
        WHERE user_id = $user ORDER BY timestamp DESC LIMIT 1""",
            params={"user": user},
        )
        .to_arrow_table()
        .to_pylist()[0]
    )


@pytest.fixture
def server(
    scoring: Path, store_url: str | None, mock_api: MockAPI, tmp_path: Path
) -> Iterator[Server]:
    chosen = ["--online-store", store_url] if store_url else []
    env = {"FRAUD_API_URL": mock_api.url, "SERVE_LOG": str(tmp_path / "serve.log")}
    running = Server(JOB, "--output", str(scoring), *chosen, env=env)
    try:
        running.wait_until_healthy()
        yield running
    finally:
        running.stop()


def ask(server: Server, user: str | None, amount: float) -> httpx.Response:
    keys = {} if user is None else {"user_id": user}
    return httpx.post(server.url + GET_FEATURES, json={"params": {
        "featureServiceName": "scoring", "joinKeyMap": keys,
        "requestContextMap": {"user_id": user or "u01", "amount": amount},
        "metadataOptions": {"includeEffectiveTimes": True},
    }}, timeout=30)  # fmt: skip


def test_a_service_answers_online_batch_features_beside_realtime_ones(server, scoring) -> None:
    answer = ask(server, "u02", 50.0)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    row = newest(scoring, "u02")
    values = body["result"]["features"]
    assert values == [*(row[m] for m in METRICS), score("u02", 50.0), 50.0 / row["mean_amount"]]
    names = [f["name"] for f in body["metadata"]["features"]]
    assert names == [f"user_metrics.{m}" for m in METRICS] + [
        "transaction_score.fraud_score", "transaction_score.amount_vs_mean"
    ]  # fmt: skip
    stamped = [f.get("effectiveTime") for f in body["metadata"]["features"]]
    assert stamped == [row["timestamp"].isoformat().replace("+00:00", "Z")] * 3 + [None, None]
    assert {f["status"] for f in body["metadata"]["features"]} == {"PRESENT"}


def test_an_unknown_entity_is_missing_and_its_realtime_view_sees_none(server) -> None:
    answer = ask(server, "nobody", 50.0)
    assert answer.status_code == 200, answer.text
    values = answer.json()["result"]["features"]
    assert values == [None, None, None, score("nobody", 50.0), None]  # amount_vs_mean: no mean
    statuses = [f["status"] for f in answer.json()["metadata"]["features"]]
    assert statuses == ["MISSING"] * 3 + ["PRESENT"] * 2


def test_a_request_without_the_join_key_is_a_400_naming_it(server) -> None:
    answer = ask(server, None, 50.0)
    assert answer.status_code == 400
    assert answer.json()["message"].startswith(
        "The request lacks join key 'user_id' (String) that feature view 'user_metrics'"
    )
    assert answer.json()["feature"] == "user_id"


def test_the_in_process_server_answers_the_same(scoring, store_url, server) -> None:
    over_http = ask(server, "u03", 12.5).json()["result"]["features"]
    with FeatureServer(JOB, output=scoring, online_store=store_url) as here:
        vector = here.get_features(
            "scoring", {"user_id": "u03", "amount": 12.5}, {"user_id": "u03"}
        )
        assert list(vector.to_dict().values()) == over_http
        with pytest.raises(BadRequest, match="join key 'user_id'"):
            here.get_features("scoring", {"user_id": "u03", "amount": 1.0})


def test_serving_without_an_online_store_says_where_it_looked(tmp_path) -> None:
    with pytest.raises(SettingsError, match=r"There is no online store at .*online\.sqlite"):
        FeatureServer(JOB, output=tmp_path / "empty")


class FakeScorer:
    """What `fraud_api` gives, in a unit test: every transaction scores 0.25."""

    def post(self, path: str, json: dict[str, Any]) -> Any:
        answer = httpx.Response(200, json={"score": 0.25})
        answer.request = httpx.Request("POST", path)
        return answer


def test_run_transformation_takes_the_batch_features_as_a_dict() -> None:
    view = load_job(JOB).realtime_views["transaction_score"]
    metrics = {"transactions": 3, "mean_amount": 40.0, "max_amount": 90.0}
    inputs = {"transaction": {"user_id": "u01", "amount": 10.0}, "user_metrics": metrics}
    answer = view.run_transformation(inputs, resources={"fraud_api": FakeScorer()})
    assert answer == {"fraud_score": 0.25, "amount_vs_mean": 0.25}
    missing = {**inputs, "user_metrics": dict.fromkeys(METRICS)}  # as serving gives MISSING
    answer = view.run_transformation(missing, resources={"fraud_api": FakeScorer()})
    assert answer == {"fraud_score": 0.25, "amount_vs_mean": None}


def test_training_rows_at_now_equal_what_serving_answers(server, scoring, store_url) -> None:
    requests = [("u01", 12.5), ("u04", 300.0), ("u06", 0.75), ("nobody", 5.0)]
    spine = pa.table({
        "user_id": [user for user, _ in requests],
        "amount": [amount for _, amount in requests],
        "timestamp": pa.array([datetime.now(UTC)] * len(requests), pa.timestamp("us", "UTC")),
    })  # fmt: skip
    training = get_historical_features(spine, [f"{JOB}:scoring"], output=scoring)
    features = [*METRICS, "fraud_score", "amount_vs_mean"]
    assert training.column_names == [*spine.column_names, *features]
    offline = [[row[f] for f in features] for row in training.to_pylist()]
    online = [ask(server, user, amount).json()["result"]["features"] for user, amount in requests]
    assert offline == online
    assert offline[-1][:3] == [None, None, None] and offline[0][3] == score("u01", 12.5)


def test_training_rows_in_the_past_use_the_batch_values_of_their_time(scoring, mock_api) -> None:
    at = datetime(2024, 10, 30, 12, tzinfo=UTC)
    spine = pa.table({"user_id": ["u02"], "amount": [80.0], "timestamp": [at]})
    [row] = get_historical_features(spine, [f"{JOB}:transaction_score"], output=scoring).to_pylist()
    [(mean,)] = duckdb.sql(
        f"""SELECT mean_amount
        FROM read_parquet('{scoring}/user_metrics/**/data.parquet', hive_partitioning = false)
        WHERE user_id = 'u02' AND timestamp <= $at ORDER BY timestamp DESC LIMIT 1""",
        params={"at": at},
    ).fetchall()
    assert mean != newest(scoring, "u02")["mean_amount"]  # an older row than serving's
    assert row["amount_vs_mean"] == 80.0 / mean and row["fraud_score"] == score("u02", 80.0)


def test_serving_an_offline_only_batch_view_is_refused_where_it_is_declared() -> None:
    view = load_job(JOB).feature_views["user_metrics"]
    offline_only = dataclasses.replace(view, online=False)
    request = RequestSource(schema=[Field("amount", Float64)])
    with pytest.raises(DefinitionError, match="reads batch feature view 'user_metrics', which is"):
        realtime_feature_view(
            sources=[request, offline_only], mode="python", features=[Attribute("n", Int64)]
        )(lambda request, metrics: {})
    with pytest.raises(DefinitionError, match="lists batch feature view 'user_metrics', which"):
        FeatureService(name="s", features=[offline_only])


def test_a_join_key_that_is_no_integer_is_a_400_naming_it(tmp_path) -> None:
    from engine.serve.transform import checked_field

    key = Field("user_id", Int64)
    assert checked_field("v", key, {"user_id": "-12"}, key=True) == -12
    for wrong in ("--5", "²", None, 1.5):
        with pytest.raises(BadRequest, match=r"join key 'user_id' is .* needs Int64"):
            checked_field("v", key, {"user_id": wrong}, key=True)


def test_a_spine_row_without_a_time_gets_no_realtime_features(scoring) -> None:
    moments = pa.array([datetime(2024, 10, 30, tzinfo=UTC), None], pa.timestamp("us", "UTC"))
    spine = pa.table({"user_id": ["u02", "u02"], "amount": [80.0, 80.0], "timestamp": moments})
    rows = get_historical_features(spine, [f"{JOB}:transaction_score"], output=scoring).to_pylist()
    assert rows[0]["fraud_score"] == score("u02", 80.0)
    assert rows[1]["fraud_score"] is None and rows[1]["amount_vs_mean"] is None
