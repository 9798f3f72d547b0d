"""Scenario 13: the online store against Feast's, on the same Redis and the same data.

Feast's side is bench/feast/contender.py, in a virtual environment of its own (its pins
conflict with Rivulet's; `bench/feast/setup.sh` makes it): it writes three batch sources
(10,000 users, 15 features, 1M rows over 30 days), applies them with an on-demand view
into a feature service, times `materialize` into Redis db 7, then times
`get_online_features` in its process and `POST /get-online-features` against `feast serve`.

Rivulet's side (bench/jobs/online.py) reads the same files: a backfill writes the offline
store (and the online one, as a run does), then Redis db 8 is flushed and `load_online`
timed, then the service is read one user at a time through `FeatureServer` in this process
and through `rivulet serve`, with the same users and amounts, sequentially, one keep-alive
client. Each answer is checked against the source's newest row before timing.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import redis

from bench.harness import ROOT, Row, Scenario, environment
from bench.jobs.online import FEATURES
from bench.s8_serving import serving
from engine import FeatureServer, backfill
from engine.publish import load_online

FEAST = ROOT / "bench" / "feast"
JOB = ROOT / "bench" / "jobs" / "online.py"
REDIS = "redis://127.0.0.1:6379/8"  # Feast's contender uses db 7
ENTITIES, WARMUP = 10_000, 100
SERVICE = "user_online_v1"
GET_FEATURES = "/api/v1/feature-service/get-features"


def run(workdir: Path, quick: bool) -> Scenario:
    rows, requests = (100_000, 300) if quick else (1_000_000, 2_000)
    work = workdir / "online"
    feast = _feast(work, rows, requests)
    data = {"BENCH_ONLINE_DATA": str(work / "data"), "BENCH_ONLINE_SUFFIX": f"{rows}_{ENTITIES}"}
    plan = _request_plan(WARMUP + requests)
    out = work / "rivulet_store"
    with environment(**data):
        began = time.perf_counter()
        summary = backfill(JOB, datetime(2026, 10, 2), datetime(2026, 11, 1), output=out,
                           online_store=REDIS)  # fmt: skip
        backfilled = time.perf_counter() - began
        assert summary.ok, summary.failed
        client = redis.Redis.from_url(REDIS)
        client.flushdb()
        began = time.perf_counter()
        load_online(JOB, output=out, online_store=REDIS)
        loaded = time.perf_counter() - began
        keys = client.dbsize()
        client.close()
        newest = _newest(work / "data", rows, sorted({user for user, _ in plan[:20]}))
        with FeatureServer(JOB, online_store=REDIS, output=out) as server:
            for user, amount in plan[:20]:
                answer = server.get_features(SERVICE, {"amount": amount}, {"user_id": user})
                _check(user, amount, _named(answer.to_dict()), newest[user])
            here = _timed(
                lambda user, amount: server.get_features(
                    SERVICE, {"amount": amount}, {"user_id": user}
                ),
                plan,
            )
        command = [sys.executable, "-m", "engine", "serve", str(JOB), "--port", "{port}",
                   "--online-store", REDIS, "--output", str(out)]  # fmt: skip
        with serving(command, data) as url:
            connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
            for user, amount in plan[:20]:
                _check(user, amount, _named(_post(connection, user, amount)), newest[user])
            remote = _timed(lambda user, amount: _post(connection, user, amount), plan)
            connection.close()
    ours = {
        "load": loaded * 1000,
        "in-process p50": _quantile(here, 0.5),
        "in-process p99": _quantile(here, 0.99),
        "HTTP p50": _quantile(remote, 0.5),
        "HTTP p99": _quantile(remote, 0.99),
    }
    theirs = {
        "load": feast["materialize_seconds"] * 1000,
        "in-process p50": feast["inprocess"]["p50_ms"],
        "in-process p99": feast["inprocess"]["p99_ms"],
        "HTTP p50": feast["http"]["p50_ms"],
        "HTTP p99": feast["http"]["p99_ms"],
    }
    what = {
        "load": (f"Feast {feast['feast_version']} materialize", "Rivulet online load"),
        "in-process p50": ("Feast get_online_features", "Rivulet FeatureServer.get_features"),
        "HTTP p50": ("feast serve /get-online-features", "rivulet serve get-features"),
    }
    table = []
    for figure in ours:
        feast_name, rivulet_name = what.get(figure, what[figure.replace("p99", "p50")])
        detail = f"{figure}, ms"
        table.append(Row(f"{feast_name} ({figure})", theirs[figure], 1.0, detail))
        table.append(
            Row(f"{rivulet_name} ({figure})", ours[figure], ours[figure] / theirs[figure], detail)
        )
    met = all(ours[f] <= 0.5 * theirs[f] for f in ("load", "in-process p99", "HTTP p99"))
    return Scenario(
        name="s13_online",
        title=(
            f"13. Online store vs Feast: {rows:,} rows of {ENTITIES:,} users, 15 features in "
            f"3 batch views + 1 realtime view, Redis"
        ),
        unit="ms",
        rows=table,
        target="read p99 <= 0.5x Feast's (in-process and HTTP); load >= 2x faster",
        met=met,
        notes=[
            "each ratio is to Feast's figure of the same kind (the row above it)",
            f"{requests:,} sequential requests after {WARMUP} warm-up ones, one user each, "
            f"the same users and amounts for both",
            f"Rivulet's backfill of the offline store (30 daily intervals, online writes "
            f"included) took {backfilled:.2f} s; after it, its Redis db was flushed and "
            f"`online load` filled it again ({keys:,} keys); Feast has no offline step",
        ],
        higher_is_better=False,
    )


def _feast(work: Path, rows: int, requests: int) -> dict[str, Any]:
    """Feast's figures: its environment made if needed, then its contender run."""
    subprocess.run([str(FEAST / "setup.sh")], check=True, capture_output=True)
    figures = work / "feast.json"
    subprocess.run(
        [str(FEAST / ".venv" / "bin" / "python"), str(FEAST / "contender.py"),
         "--entities", str(ENTITIES), "--rows", str(rows), "--requests", str(requests),
         "--warmup", str(WARMUP), "--work", str(work), "--json", str(figures)],
        check=True, capture_output=True,
    )  # fmt: skip
    return json.loads(figures.read_text())


def _request_plan(n: int) -> list[tuple[int, float]]:
    """The contender's users and amounts (its seed), so both read the same entities."""
    rng = np.random.default_rng(13 + 100)
    users = rng.integers(0, ENTITIES, n)
    amounts = np.round(rng.lognormal(3.0, 1.0, n), 2)
    return [(int(u), float(a)) for u, a in zip(users, amounts, strict=True)]


def _newest(data: Path, rows: int, users: list[int]) -> dict[int, dict[str, Any]]:
    """Each user's newest source row, all three views' features together."""
    found: dict[int, dict[str, Any]] = {user: {} for user in users}
    for view in ("user_txn_stats", "user_session_stats", "user_account_stats"):
        table = duckdb.sql(
            f"""SELECT * EXCLUDE (event_timestamp) FROM '{data}/{view}_{rows}_{ENTITIES}.parquet'
            WHERE user_id IN ({", ".join(map(str, users))})
            QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY event_timestamp DESC) = 1"""
        ).to_arrow_table()
        for row in table.to_pylist():
            found[row.pop("user_id")].update(row)
    return found


def _named(features: dict[str, Any]) -> dict[str, Any]:
    """`view.feature` names cut to the feature's, as the sources name them."""
    return {name.split(".", 1)[1]: value for name, value in features.items()}


def _check(user: int, amount: float, got: dict[str, Any], want: dict[str, Any]) -> None:
    wrong = {name: (got.get(name), value) for name, value in want.items() if got.get(name) != value}
    if wrong or got["amount_ratio"] != amount / want["avg_amount"]:
        raise AssertionError(f"user {user}: (got, wanted) {wrong or got['amount_ratio']}")


def _post(connection: http.client.HTTPConnection, user: int, amount: float) -> dict[str, Any]:
    body = json.dumps({"params": {"featureServiceName": SERVICE, "joinKeyMap": {"user_id": user},
                                  "requestContextMap": {"amount": amount}}})  # fmt: skip
    connection.request("POST", GET_FEATURES, body, {"Content-Type": "application/json"})
    answer = json.loads(connection.getresponse().read())
    names = [f"{v}.{f}" for v, f in _feature_names()]
    return dict(zip(names, answer["result"]["features"], strict=True))


def _feature_names() -> list[tuple[str, str]]:
    return [
        *((view, feature) for view, features in FEATURES.items() for feature in features),
        ("amount_vs_avg", "amount_ratio"),
    ]


def _timed(ask: Any, plan: list[tuple[int, float]]) -> list[float]:
    """Milliseconds of each request after the warm-up ones."""
    taken = []
    for index, (user, amount) in enumerate(plan):
        began = time.perf_counter()
        ask(user, amount)
        if index >= WARMUP:
            taken.append((time.perf_counter() - began) * 1000)
    return taken


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
