"""Fault injection of the mock API, measured at the client against the real server subprocess."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from fixtures.mock_api import Faults, MockAPI, embed, max_requests_in_any_window
from fixtures.mock_faults import OUTCOMES, FaultInjector, add_fault_arguments

EMBED = {"model": "m", "input": "hello"}
SCORE = {"user_id": "u1", "amount": 2.5}


@pytest.fixture(scope="module")
def api() -> Iterator[MockAPI]:
    """One server for the module; `fresh` turns its faults off before every test."""
    with MockAPI(log=True) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(api: MockAPI) -> float:
    """All faults off, seed 0, counters zeroed; returns the unix time the test started."""
    api.set_faults(**Faults().as_dict(), seed=0)
    api.reset_stats()
    return time.time()


@pytest.fixture
def client(api: MockAPI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, trust_env=False, timeout=5) as http:
        yield http


@pytest.fixture
def sdk(api: MockAPI) -> Iterator[openai.OpenAI]:
    """The openai SDK pointed at the mock, without retries."""
    with httpx.Client(trust_env=False) as http:
        yield openai.OpenAI(
            base_url=api.base_url, api_key="test", max_retries=0, timeout=5, http_client=http
        )


def since(api: MockAPI, t0: float) -> list[tuple[float, str, str]]:
    return [row for row in api.arrivals() if row[0] >= t0]


def burst(client: httpx.Client, n: int) -> tuple[list[int], float]:
    """Send `n` embeddings requests back to back: their statuses and the seconds taken."""
    start = time.perf_counter()
    statuses = [client.post("/v1/embeddings", json=EMBED).status_code for _ in range(n)]
    return statuses, time.perf_counter() - start


def test_latency_and_jitter_keep_embeddings_exact(
    api: MockAPI, client: httpx.Client, sdk: openai.OpenAI
) -> None:
    faults = Faults(latency_ms=30, jitter_ms=60)
    api.set_faults(**faults.as_dict())
    # The delays the server draws, from the same seed (0) and request order: each is the
    # latency plus uniform(0, 60) ms, and they differ. A loaded machine only adds to each.
    twin = FaultInjector(faults, seed=0)
    delays = [twin.decide("/v1/embeddings").delay for _ in range(8)]
    assert all(0.03 <= d <= 0.09 for d in delays) and max(delays) - min(delays) >= 0.010
    took = []
    for i in range(8):
        start = time.perf_counter()
        resp = client.post("/v1/embeddings", json={"model": "m", "input": f"text {i}"})
        took.append(time.perf_counter() - start)
        assert resp.json()["data"][0]["embedding"] == embed(f"text {i}")
    assert all(t >= d - 0.001 for t, d in zip(took, delays, strict=True))
    got = sdk.embeddings.create(model="m", input=["a b", "c"])
    assert [d.embedding for d in got.data] == [embed("a b"), embed("c")]


def test_token_bucket_burst_then_refill_rate(
    api: MockAPI, client: httpx.Client, fresh: float
) -> None:
    # Bounds that hold however slowly the requests go: the bucket lets through what it
    # holds, and no more than it refills meanwhile (20/s); the reference bucket below
    # checks each arrival against the times the server logged, not the test's pace.
    api.set_faults(rate_limit=20, burst=5)
    statuses, took = burst(client, 60)
    assert set(statuses) <= {200, 429} and statuses[:5] == [200] * 5
    assert statuses.count(200) <= 5 + 20 * took + 1  # 5..7 when the 60 take under 0.1 s

    time.sleep(0.5)  # at least 0.5 s: refills 10 tokens, but the bucket holds only 5
    statuses, took = burst(client, 60)
    assert set(statuses) <= {200, 429} and statuses[:5] == [200] * 5
    assert statuses.count(200) <= 5 + 20 * took + 1

    start = time.perf_counter()  # steady requests until 10 got through: >= 0.4 s
    first = client.post("/v1/embeddings", json=EMBED).status_code
    ok, held = int(first == 200), 1 if first == 429 else 5  # a 429: under one token left
    deadline = start + 60  # a hang guard, not a speed limit
    while ok < 10:
        assert time.perf_counter() < deadline
        time.sleep(0.005)
        ok += client.post("/v1/embeddings", json=EMBED).status_code == 200
    took = time.perf_counter() - start
    assert ok <= held + 20 * took + 1

    rows = since(api, fresh)
    assert len(rows) == api.stats()["requests"]
    ok_times = [t for t, _, outcome in rows if outcome == "ok"]
    assert max_requests_in_any_window(ok_times, 1.0) <= 5 + 20 + 1
    tokens, last, expected = 5.0, rows[0][0], 0  # a reference bucket over the logged arrivals
    for t, _, _ in rows:
        tokens, last = min(5.0, tokens + (t - last) * 20), t
        if tokens >= 1:
            tokens, expected = tokens - 1, expected + 1
    assert abs(len(ok_times) - expected) <= 2


def test_429_carries_retry_after_and_comes_before_latency(
    api: MockAPI, client: httpx.Client, sdk: openai.OpenAI
) -> None:
    api.set_faults(rate_limit=10, burst=1)
    assert client.post("/v1/score", json=SCORE).status_code == 200  # a full bucket
    deadline = time.monotonic() + 60  # a hang guard: a request within 0.1 s of the last
    while (resp := client.post("/v1/score", json=SCORE)).status_code == 200:
        assert time.monotonic() < deadline
    assert resp.status_code == 429
    assert resp.json()["error"]["type"] == "rate_limit_error"
    assert resp.json()["error"]["message"] == "Rate limit exceeded"
    seconds, millis = float(resp.headers["retry-after"]), resp.headers["retry-after-ms"]
    assert 0 < seconds <= 0.1
    assert millis.isdigit() and 1 <= int(millis) <= 100
    assert abs(int(millis) / 1000 - seconds) <= 0.002
    time.sleep(seconds + 0.01)
    assert client.post("/v1/score", json=SCORE).status_code == 200  # honouring it works

    api.set_faults(rate_limit=0.01, burst=1)  # a new full bucket, refilled in 100 s
    sdk.embeddings.create(model="m", input="x")
    api.set_faults(latency_ms=60_000)  # the bucket stays empty
    # A 429 that waited for the latency would outlast the client's 10 s and time out.
    with pytest.raises(openai.RateLimitError) as info:
        sdk.with_options(timeout=10).embeddings.create(model="m", input="x")
    assert int(info.value.response.headers["retry-after-ms"]) > 50_000  # ~100 s, not 60


def test_error_rate(api: MockAPI, client: httpx.Client, sdk: openai.OpenAI, fresh: float) -> None:
    api.set_faults(error_rate=1, latency_ms=20)
    start = time.perf_counter()
    answers = [client.post("/v1/score", json=SCORE) for _ in range(12)]
    assert time.perf_counter() - start >= 12 * 0.019  # errors come after the latency
    assert {r.status_code for r in answers} == {500, 503}
    assert all(r.json()["error"]["type"] == "server_error" for r in answers)
    with pytest.raises(openai.InternalServerError):
        sdk.embeddings.create(model="m", input="x")

    api.set_faults(error_rate=0.3, latency_ms=0)
    statuses, _ = burst(client, 200)
    assert 30 <= sum(s >= 500 for s in statuses) <= 95
    assert set(statuses) <= {200, 500, 503}
    outcomes = [outcome for _, _, outcome in since(api, fresh)][-200:]
    assert outcomes == [{200: "ok", 500: "500", 503: "503"}[s] for s in statuses]


def test_drop_rate(api: MockAPI, client: httpx.Client, sdk: openai.OpenAI, fresh: float) -> None:
    api.set_faults(drop_rate=1)
    with pytest.raises(httpx.TransportError):  # connection reset / server disconnected
        client.post("/v1/embeddings", json=EMBED)
    with pytest.raises(openai.APIConnectionError):
        sdk.embeddings.create(model="m", input="x")

    api.set_faults(drop_rate=0.5)
    seen = []
    for _ in range(40):
        try:
            seen.append(str(client.post("/v1/score", json=SCORE).status_code))
        except httpx.TransportError:
            seen.append("drop")
    assert 8 <= seen.count("drop") <= 32
    assert [outcome for _, _, outcome in since(api, fresh)][-40:] == [
        "ok" if s == "200" else s for s in seen
    ]
    assert client.get("/health").json() == {"ok": True}


def test_slow_rate_exceeds_client_timeout(
    api: MockAPI, client: httpx.Client, sdk: openai.OpenAI, fresh: float
) -> None:
    api.set_faults(slow_rate=1, slow_ms=20_000)  # far past the 0.1 s, however late it reads
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/embeddings", json=EMBED, timeout=0.1)
    with pytest.raises(openai.APITimeoutError):
        sdk.with_options(timeout=0.1).embeddings.create(model="m", input="x")

    api.set_faults(slow_rate=0.5, slow_ms=40)
    took = []
    for i in range(16):
        start = time.perf_counter()
        resp = client.post("/v1/embeddings", json={"model": "m", "input": f"t{i}"})
        took.append(time.perf_counter() - start)
        assert resp.json()["data"][0]["embedding"] == embed(f"t{i}")  # slow, but answered
    outcomes = [outcome for _, _, outcome in since(api, fresh)][-16:]
    assert set(outcomes) == {"ok", "slow"}
    assert all(t >= 0.039 for t, o in zip(took, outcomes, strict=True) if o == "slow")
    assert api.stats()["by_outcome"]["slow"] == outcomes.count("slow") + 2


def test_arrival_log_and_stats_by_outcome(api: MockAPI, client: httpx.Client, fresh: float) -> None:
    api.set_faults(error_rate=0.2, drop_rate=0.2, slow_rate=0.2, slow_ms=1, seed=5)
    paths, seen = [], []
    for i in range(50):
        path, body = ("/v1/embeddings", EMBED) if i % 2 else ("/v1/score", SCORE)
        paths.append(path)
        try:
            seen.append(str(client.post(path, json=body).status_code))
        except httpx.TransportError:
            seen.append("drop")
    done = time.time()
    assert api.log_path is not None

    def on_disk() -> int:  # read directly: no /log/flush
        return sum(
            float(line.split()[0]) >= fresh for line in api.log_path.read_text().splitlines()
        )

    deadline = time.monotonic() + 60  # a hang guard: it flushes every 0.2 s by itself
    while on_disk() < 50:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert on_disk() == 50

    rows = since(api, fresh)
    assert len(rows) == 50
    times = [t for t, _, _ in rows]
    assert times == sorted(times) and fresh <= times[0] and times[-1] <= done
    assert [p for _, p, _ in rows] == paths
    outcomes = [o for _, _, o in rows]
    assert [s if s != "200" else "ok/slow" for s in seen] == [
        "ok/slow" if o in ("ok", "slow") else o for o in outcomes
    ]
    assert len(set(outcomes)) == 5  # ok, 500, 503, drop, slow all occur (fixed by the seed)
    stats = api.stats()
    assert stats["requests"] == 50
    assert stats["by_path"] == {"/v1/score": 25, "/v1/embeddings": 25}
    assert stats["by_outcome"] == {k: outcomes.count(k) for k in OUTCOMES}


def test_faults_change_live(api: MockAPI, client: httpx.Client) -> None:
    assert client.post("/v1/score", json=SCORE).status_code == 200
    api.set_faults(error_rate=1)
    assert client.post("/v1/score", json=SCORE).status_code in (500, 503)
    assert client.get("/faults").json()["error_rate"] == 1
    api.set_faults(error_rate=0)
    assert client.post("/v1/score", json=SCORE).status_code == 200
    assert api.faults.error_rate == 0

    resp = client.post("/faults", json={"error_rate": 0.5, "bogus": 1})
    assert resp.status_code == 400 and "bogus" in resp.json()["error"]["message"]
    assert client.post("/faults", json={"drop_rate": -1}).status_code == 400
    assert client.post("/faults", json={"drop_rate": 0.6, "slow_rate": 0.6}).status_code == 400
    with pytest.raises(ValueError, match="at most 1"):
        api.set_faults(error_rate=2)
    with pytest.raises(ValueError, match="unknown"):
        api.set_faults(nonsense=1)
    assert client.get("/faults").json()["error_rate"] == 0  # rejected changes change nothing


def test_seed_makes_runs_reproducible(api: MockAPI, client: httpx.Client) -> None:
    def run(seed: int) -> list[int]:
        api.set_faults(seed=seed, error_rate=0.5)
        return [client.post("/v1/score", json=SCORE).status_code for _ in range(30)]

    first = run(7)
    assert run(7) == first
    assert run(8) != first
    assert set(first) == {200, 500, 503}


def test_cli_switches_and_log_flushed_at_shutdown(tmp_path: Path) -> None:
    log = tmp_path / "arrivals.log"
    with MockAPI(latency_ms=10, error_rate=1, rate_limit=0.01, burst=2, seed=3, log=log) as api:
        assert api.log_path == log
        with httpx.Client(base_url=api.url, trust_env=False) as http:
            statuses = [http.post("/v1/score", json=SCORE).status_code for _ in range(3)]
    assert statuses[0] in (500, 503) and statuses[1] in (500, 503) and statuses[2] == 429
    lines = log.read_text().splitlines()  # written at shutdown, read without the server
    assert [ln.split()[1:] for ln in lines] == [["/v1/score", str(s)] for s in statuses]
    assert [o for _, _, o in api.arrivals()] == [str(s) for s in statuses]

    with pytest.raises(ValueError, match="error_rate"):
        MockAPI(error_rate=2)
    bad = [sys.executable, "-m", "fixtures.mock_api", "--error-rate", "1.5"]
    done = subprocess.run(bad, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "at most 1" in done.stderr


def test_faults_round_trip_through_switches() -> None:
    faults = Faults(latency_ms=5, jitter_ms=2, rate_limit=20, burst=5, error_rate=0.1,
                    drop_rate=0.2, slow_rate=0.3, slow_ms=400)  # fmt: skip
    parser = argparse.ArgumentParser()
    add_fault_arguments(parser)
    args = parser.parse_args([*faults.to_args(), "--seed", "4"])
    injector = FaultInjector.from_args(args)
    assert injector.faults == faults and injector.seed == 4 and injector.log is None
    assert Faults().to_args() == []


def test_max_requests_in_any_window() -> None:
    assert max_requests_in_any_window([]) == 0
    assert max_requests_in_any_window([3.0]) == 1
    times = [1.6, 0.0, 1.0, 0.5, 0.99, 1.5]  # unsorted on purpose
    assert max_requests_in_any_window(times) == 4  # [0.99, 1.99); [0.5, 1.5) misses 1.5
    assert max_requests_in_any_window(times, window=0.5) == 2  # half-open: [0.5, 1.0) misses 1.0
    assert max_requests_in_any_window(times, window=2.0) == 6
    assert max_requests_in_any_window([0.0, 0.0, 0.0, 1.0], window=1.0) == 3
