"""Feast's side of the s13 online benchmark: materialize into Redis, then read online features.

Run with Feast's own interpreter (``bench/feast/.venv``, made by ``setup.sh``), never Rivulet's:

    bench/feast/.venv/bin/python bench/feast/contender.py --json /tmp/feast.json [--quick]

What it does, as a Feast user would:

1. writes deterministic synthetic Parquet (seeded numpy): three batch sources of ``user_id``
   (int64), ``event_timestamp`` and 5 features each, many rows per user over 30 days;
2. writes a feature repo (``feature_store.yaml``: provider local, the default file/Dask offline
   store, a file registry, Redis online store) and applies an Entity, three FileSource +
   FeatureView (ttl 30 days, online), a python-mode OnDemandFeatureView over a request field
   and one batch feature, and a FeatureService of all 16 features;
3. flushes the Redis db it was given (only that one), then times ``store.materialize``;
4. times ``store.get_online_features(FeatureService, one entity row)`` in this process, and
   ``POST /get-online-features`` against ``feast serve`` over loopback HTTP (one keep-alive
   client, sequential requests; by FeatureService name, then with its features listed),
   after checking every path against the source data.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import feast
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis
from feast import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    RequestSource,
    ValueType,
)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

PROJECT = "s13_online"
SEED = 13
DAYS = 30
# Fixed so that the data (and its Parquet files) are the same on every run; Feast's online
# reads do not apply the feature views' ttl, so an old anchor does not empty the answers.
ANCHOR = datetime(2026, 11, 1, tzinfo=UTC)
SERVICE = "user_online_v1"

# view name -> (feature, dtype) for its 5 features
VIEWS: dict[str, list[tuple[str, Any]]] = {
    "user_txn_stats": [
        ("avg_amount", Float64),
        ("max_amount", Float64),
        ("txn_count_7d", Int64),
        ("txn_count_30d", Int64),
        ("refund_rate", Float64),
    ],
    "user_session_stats": [
        ("sessions_7d", Int64),
        ("avg_session_minutes", Float64),
        ("pages_per_session", Float64),
        ("days_active_30d", Int64),
        ("bounce_rate", Float64),
    ],
    "user_account_stats": [
        ("account_age_days", Int64),
        ("credit_limit", Float64),
        ("num_cards", Int64),
        ("risk_score", Float64),
        ("loyalty_points", Int64),
    ],
}


# --------------------------------------------------------------------------- data


def generate_sources(data_dir: Path, rows: int, entities: int) -> dict[str, Path]:
    """One Parquet file per view; ``rows`` split across the three, every user in each."""
    data_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    span_us = DAYS * 86_400 * 1_000_000
    start_us = int((ANCHOR - timedelta(days=DAYS)).timestamp() * 1_000_000)
    for i, (view, features) in enumerate(VIEWS.items()):
        n = rows // 3 + (1 if i < rows % 3 else 0)
        path = data_dir / f"{view}_{rows}_{entities}.parquet"
        paths[view] = path
        if path.exists():
            continue
        rng = np.random.default_rng(SEED + i)
        users = rng.integers(0, entities, n, dtype=np.int64)
        users[: min(n, entities)] = np.arange(min(n, entities), dtype=np.int64)
        # whole microseconds, strictly inside [ANCHOR - 30 days, ANCHOR)
        ts = start_us + rng.integers(0, span_us, n, dtype=np.int64)
        columns: dict[str, pa.Array] = {
            "user_id": pa.array(users, pa.int64()),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        }
        for name, dtype in features:
            if dtype == Int64:
                columns[name] = pa.array(rng.integers(0, 1_000, n, dtype=np.int64))
            else:
                columns[name] = pa.array(rng.lognormal(3.0, 1.0, n))
        tmp = path.with_suffix(".tmp")
        pq.write_table(pa.table(columns), tmp)
        tmp.rename(path)
    return paths


def latest_rows(paths: dict[str, Path], users: list[int]) -> dict[int, dict[str, Any]]:
    """What the online store must answer for ``users``: each view's row of latest timestamp."""
    want = set(users)
    out: dict[int, dict[str, Any]] = {u: {} for u in users}
    for path in paths.values():
        table = pq.read_table(path)
        ids = table["user_id"].to_numpy()
        ts = table["event_timestamp"].cast(pa.int64()).to_numpy()
        best: dict[int, int] = {}
        for row in np.flatnonzero(np.isin(ids, list(want))):
            u = int(ids[row])
            if u not in best or ts[row] > ts[best[u]]:
                best[u] = int(row)
        for u, row in best.items():
            out[u].update(
                {
                    c: table[c][row].as_py()
                    for c in table.column_names
                    if c not in ("user_id", "event_timestamp")
                }
            )
    return out


# --------------------------------------------------------------------------- repo


def redis_settings(url: str) -> tuple[str, int, int]:
    parsed = urlparse(url)
    if parsed.scheme != "redis":
        raise SystemExit(f"--redis must be redis://HOST:PORT/DB, got {url!r}")
    db = int(parsed.path.lstrip("/") or 0)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379, db


def write_repo(repo: Path, host: str, port: int, db: int, offline_store: str) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "data").mkdir(exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        f"""project: {PROJECT}
registry: data/registry.db
provider: local
online_store:
    type: redis
    connection_string: "{host}:{port},db={db}"
offline_store:
    type: {offline_store}
entity_key_serialization_version: 3
auth:
    type: no_auth
"""
    )


user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
txn_request = RequestSource(name="txn_request", schema=[Field(name="amount", dtype=Float64)])


def feature_views(paths: dict[str, Path]) -> list[FeatureView]:
    return [
        FeatureView(
            name=view,
            entities=[user],
            ttl=timedelta(days=DAYS),
            schema=[Field(name=name, dtype=dtype) for name, dtype in features],
            online=True,
            source=FileSource(
                name=f"{view}_source",
                path=str(paths[view].resolve()),
                timestamp_field="event_timestamp",
            ),
        )
        for view, features in VIEWS.items()
    ]


def definitions(paths: dict[str, Path]) -> list[Any]:
    views = feature_views(paths)
    txn_stats = views[0]

    @on_demand_feature_view(
        sources=[txn_stats, txn_request],
        schema=[Field(name="amount_ratio", dtype=Float64)],
        mode="python",
    )
    def amount_vs_avg(inputs: dict[str, Any]) -> dict[str, Any]:
        return {
            "amount_ratio": [
                a / m if m else None
                for a, m in zip(inputs["amount"], inputs["avg_amount"], strict=True)
            ]
        }

    service = FeatureService(name=SERVICE, features=[*views, amount_vs_avg])
    return [user, txn_request, *views, amount_vs_avg, service]


# --------------------------------------------------------------------------- timing


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    n: int


def summarize(samples_s: list[float]) -> Latency:
    ms = [s * 1000 for s in samples_s]
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98]
    return Latency(
        p50_ms=round(statistics.median(ms), 3),
        p99_ms=round(p99, 3),
        mean_ms=round(statistics.fmean(ms), 3),
        max_ms=round(max(ms), 3),
        n=len(ms),
    )


def request_plan(n: int, entities: int) -> list[tuple[int, float]]:
    rng = np.random.default_rng(SEED + 100)
    users = rng.integers(0, entities, n)
    amounts = np.round(rng.lognormal(3.0, 1.0, n), 2)
    return [(int(u), float(a)) for u, a in zip(users, amounts, strict=True)]


def check(user_id: int, amount: float, got: dict[str, Any], want: dict[str, Any]) -> None:
    """``got`` is one row's features by name; compare with the source's latest row."""
    for name, value in want.items():
        if got.get(name) != value:
            raise SystemExit(f"user {user_id}: {name} = {got.get(name)!r}, expected {value!r}")
    ratio = amount / want["avg_amount"]
    if abs(got["amount_ratio"] - ratio) > 1e-9 * abs(ratio):
        raise SystemExit(f"user {user_id}: amount_ratio {got['amount_ratio']!r} != {ratio!r}")


def time_inprocess(store: FeatureStore, plan: list[tuple[int, float]], warmup: int) -> list[float]:
    service = store.get_feature_service(SERVICE)
    samples: list[float] = []
    for i, (user_id, amount) in enumerate(plan):
        t0 = time.perf_counter()
        store.get_online_features(
            features=service, entity_rows=[{"user_id": user_id, "amount": amount}]
        ).to_dict()
        elapsed = time.perf_counter() - t0
        if i >= warmup:
            samples.append(elapsed)
    return samples


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(repo: Path, port: int, log: Path, max_requests: int) -> subprocess.Popen[bytes]:
    feast_cli = Path(sys.executable).parent / "feast"
    cmd = [
        str(feast_cli), "--chdir", str(repo), "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log",
        # feast serve's default (1000, jitter 50) has gunicorn replace its worker after
        # that many requests, inside the timed run; 0 (this script's default) turns it off.
        "--max-requests", str(max_requests),
    ]  # fmt: skip
    # gunicorn 27 opens a control socket (and makes $HOME/.gunicorn/ for it even when told
    # not to); keep both off and any trace of them inside the work directory
    env = {
        **os.environ,
        "GUNICORN_CMD_ARGS": "--no-control-socket",
        "XDG_RUNTIME_DIR": str(log.parent),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"feast serve exited with {proc.returncode}; see {log}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise SystemExit(f"feast serve did not answer /health within 120 s; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # gunicorn's arbiter and its worker
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def http_rows(body: dict[str, Any]) -> dict[str, Any]:
    """The first entity's features by name from a /get-online-features answer."""
    names = body["metadata"]["feature_names"]
    return {name: res["values"][0] for name, res in zip(names, body["results"], strict=True)}


# The same 16 features as the FeatureService, named one by one ("view:feature").
FEATURE_REFS = [f"{view}:{name}" for view, fs in VIEWS.items() for name, _ in fs] + [
    "amount_vs_avg:amount_ratio"
]


def post(
    conn: http.client.HTTPConnection, user_id: int, amount: float, by_name: bool = False
) -> dict[str, Any]:
    """One request: by the FeatureService's name, or (``by_name``) its features listed."""
    body: dict[str, Any] = {"entities": {"user_id": [user_id], "amount": [amount]}}
    if by_name:
        body["features"] = FEATURE_REFS
    else:
        body["feature_service"] = SERVICE
    payload = json.dumps(body)
    conn.request(
        "POST", "/get-online-features", body=payload,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise SystemExit(f"/get-online-features: HTTP {resp.status}: {data[:500]!r}")
    return json.loads(data)


def time_http(
    port: int, plan: list[tuple[int, float]], warmup: int, by_name: bool = False
) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    samples: list[float] = []
    try:
        for i, (user_id, amount) in enumerate(plan):
            t0 = time.perf_counter()
            post(conn, user_id, amount, by_name)
            elapsed = time.perf_counter() - t0
            if i >= warmup:
                samples.append(elapsed)
    finally:
        conn.close()
    return samples


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=None, help="total rows (default 1,000,000)")
    parser.add_argument("--requests", type=int, default=None, help="timed requests (2000)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "work")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="100k rows, 300 requests")
    parser.add_argument("--no-http", action="store_true", help="skip the feature server")
    parser.add_argument(
        "--offline-store",
        choices=["file", "duckdb"],
        default="file",
        help="file = Dask, Feast's default; duckdb needs the feast[duckdb] extra",
    )
    parser.add_argument(
        "--server-max-requests",
        type=int,
        default=0,
        help="feast serve --max-requests (its default is 1000; 0 = never recycle the worker)",
    )
    args = parser.parse_args(argv)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    n_requests = args.requests or (300 if args.quick else 2_000)
    host, port, db = redis_settings(args.redis)

    work: Path = args.work.resolve()
    repo = work / f"repo_{rows}_{args.entities}_{args.offline_store}"
    paths = generate_sources(work / "data", rows, args.entities)
    write_repo(repo, host, port, db, args.offline_store)
    # a fresh registry each run: apply then registers exactly these objects
    (repo / "data" / "registry.db").unlink(missing_ok=True)

    store = FeatureStore(repo_path=str(repo))
    store.apply(definitions(paths))

    client = redis.Redis(host=host, port=port, db=db)
    client.flushdb()  # this db only

    t0 = time.perf_counter()
    store.materialize(start_date=ANCHOR - timedelta(days=DAYS + 1), end_date=ANCHOR)
    materialize_s = time.perf_counter() - t0
    keys = client.dbsize()
    # one hash per user: its 15 features and a timestamp per view; sample its size
    sample = [k for _, k in zip(range(200), client.scan_iter(count=200), strict=False)]
    bytes_per_key = statistics.fmean(client.memory_usage(k) or 0 for k in sample)
    fields_per_key = client.hlen(sample[0])
    client.close()

    plan = request_plan(args.warmup + n_requests, args.entities)
    sample_users = sorted({u for u, _ in plan[:20]})
    expected = latest_rows(paths, sample_users)
    service = store.get_feature_service(SERVICE)
    amounts = dict(plan[:20])
    for u in sample_users:
        resp = store.get_online_features(
            features=service, entity_rows=[{"user_id": u, "amount": amounts[u]}]
        ).to_dict()
        check(u, amounts[u], {k: v[0] for k, v in resp.items()}, expected[u])

    inprocess = summarize(time_inprocess(store, plan, args.warmup))

    http_lat: Latency | None = None
    http_refs: Latency | None = None
    if not args.no_http:
        port_http = free_port()
        proc = start_server(repo, port_http, work / "feast_serve.log", args.server_max_requests)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port_http, timeout=30)
            for u in sample_users:
                for by_name in (False, True):
                    got = http_rows(post(conn, u, amounts[u], by_name))
                    check(u, amounts[u], got, expected[u])
            conn.close()
            http_lat = summarize(time_http(port_http, plan, args.warmup))
            http_refs = summarize(time_http(port_http, plan, args.warmup, by_name=True))
        finally:
            stop_server(proc)

    result: dict[str, Any] = {
        "feast_version": feast.__version__,
        "materialize_seconds": round(materialize_s, 3),
        "rows": rows,
        "entities": args.entities,
        "redis_keys": keys,
        "redis_fields_per_key": fields_per_key,
        "redis_bytes_per_key": round(bytes_per_key),
        "offline_store": store.config.offline_store.type,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "server_max_requests": None if args.no_http else args.server_max_requests,
        "inprocess": asdict(inprocess),
        "http": asdict(http_lat) if http_lat else None,
        # the same requests naming the 16 features instead of the FeatureService: the server
        # rebuilds a FeatureService from the registry's protobuf on every request (~1 ms)
        "http_feature_refs": asdict(http_refs) if http_refs else None,
    }
    print()
    print(
        f"Feast {result['feast_version']}, {rows:,} rows, {args.entities:,} users, "
        f"{keys:,} Redis keys, load {result['loadavg_1m']}"
    )
    print(f"materialize: {materialize_s:.2f} s wall (Redis db {db} flushed first)")
    print(
        f"{'online read, one entity':<34}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}"
        f"{'max ms':>9}{'n':>7}"
    )
    for label, lat in (
        ("get_online_features, in-process", inprocess),
        ("POST /get-online-features (HTTP)", http_lat),
        ("  the same, features listed", http_refs),
    ):
        if lat:
            print(
                f"{label:<34}{lat.p50_ms:>9.3f}{lat.p99_ms:>9.3f}{lat.mean_ms:>9.3f}"
                f"{lat.max_ms:>9.1f}{lat.n:>7}"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
