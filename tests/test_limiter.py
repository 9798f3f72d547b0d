"""`--limiter redis://...`: one token bucket per rate limit, shared by every worker of every
run (local processes and Ray actors alike), against real Redis and the mock API's own limit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import FeatureServer
from engine.runtime.shared_limits import KEY, SharedBuckets, lease_size
from engine.runtime.stopping import Stopper
from fixtures.mock_api import MockAPI, max_requests_in_any_window
from tests.conftest import REPO, run_cli
from tests.services import require_service
from tests.test_rate_limits import JOB, LEEWAY, START

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis, its Rivulet buckets emptied; skipped (failed in CI) without it."""

    def probe() -> str:
        import redis

        client = redis.Redis.from_url(REDIS, socket_connect_timeout=3)
        for key in client.scan_iter(KEY.format("*")):
            client.delete(key)
        client.close()
        return REDIS

    return require_service("Redis", REDIS, probe)


def test_leases_stay_within_the_burst() -> None:
    assert lease_size(100, 10) == 5 and lease_size(10, 1) == 1 and lease_size(5000, 400) == 200


def test_workers_sharing_a_bucket_keep_together_to_rate_plus_burst(redis_url: str) -> None:
    granted: list[float] = []

    async def worker() -> None:
        buckets = SharedBuckets(redis_url, {"api": (200.0, 20.0)}, Stopper())
        loop = asyncio.get_running_loop()
        for _ in range(300):
            await buckets.take("api", 1)
            granted.append(loop.time())
        await buckets.close()

    async def main() -> None:
        await asyncio.gather(worker(), worker(), worker())

    asyncio.run(main())
    assert len(granted) == 900
    # however the three share it, no second sees more than rate + burst grants
    assert max_requests_in_any_window(sorted(granted), 1.0) <= 200 + 20
    # and 900 tokens at 200/s with a burst of 20 take at least (900 - 20) / 200 seconds
    assert max(granted) - min(granted) >= (900 - 20) / 200 * 0.98


def test_concurrent_calls_of_one_worker_use_every_token_it_leases(redis_url: str) -> None:
    """Calls waiting together share one lease at a time: none is granted and then lost (the
    clock stands still, so no lease expires unused)."""
    granted: list[int] = []

    class Counted(SharedBuckets):
        async def _grant(self, name: str, rate: float, burst: float, n: int) -> float:
            wait = await super()._grant(name, rate, burst, n)
            granted.extend([n] if wait == 0 else [])
            return wait

    async def main() -> None:
        buckets = Counted(redis_url, {"api": (1000.0, 100.0)}, Stopper(), clock=lambda: 0.0)
        await asyncio.gather(*(buckets.take("api", 1) for _ in range(400)))
        await buckets.close()

    asyncio.run(main())
    assert 400 <= sum(granted) < 400 + lease_size(1000.0, 100.0)


def test_an_unreachable_limiter_stops_the_run_before_any_work(write_job, tmp_path: Path) -> None:
    job = write_job(
        """
@batch_feature_view(mode="python", sources=[events], entities=[user],
                    features=[Attribute("n", Int64)], batch_schedule="1d",
                    feature_start_time=datetime(2024, 10, 26))
def n(row):
    return {"n": 1}
"""
    )
    result = run_cli("backfill", job, "--start", "2024-10-26", "--end", "2024-10-27",
                     "--output", tmp_path / "o", "--limiter", "redis://127.0.0.1:9/0")  # fmt: skip
    assert result.returncode == 2
    assert "The shared rate limiter at redis://127.0.0.1:9/0 does not answer" in result.stderr
    assert not (tmp_path / "o" / "n").exists()


def uneven_events(path: Path) -> Path:
    """Three days of events, the first with five times the rows of the others."""
    stamps = [START + timedelta(days=0, seconds=i * 150) for i in range(500)]
    stamps += [START + timedelta(days=d, seconds=i * 800) for d in (1, 2) for i in range(100)]
    pq.write_table(
        pa.table(
            {
                "user_id": [f"u{i % 7}" for i in range(len(stamps))],
                "timestamp": pa.array(stamps, pa.timestamp("us")),
                "amount": [float(i % 97) for i in range(len(stamps))],
            }
        ),
        path,
    )
    return path


def test_local_workers_and_ray_actors_share_one_limit(redis_url: str, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    events = uneven_events(tmp_path / "events.parquet")
    rate = "RateLimit(requests_per_second=100, burst=10)"
    job = tmp_path / "scoring.py"
    job.write_text(JOB.format(events=str(events), provider_args=f"rate_limit={rate}", view="s"))
    with MockAPI(rate_limit=100, burst=10 + LEEWAY, log=True) as api:
        env = {**os.environ, "FRAUD_API_URL": api.url, "RIVULET_LIMITER": redis_url}
        command = [sys.executable, "-m", "engine", "backfill", str(job), "--start",
                   "2024-10-26", "--end", "2024-10-29", "--workers", "2", "--json"]  # fmt: skip
        runs = [
            subprocess.Popen(
                [*command, "--output", str(tmp_path / name), "--executor", name],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in ("local", "ray")
        ]
        outputs = [run.communicate(timeout=600) for run in runs]
        arrivals = sorted(t for t, _, _ in api.arrivals())
        outcomes = api.stats()["by_outcome"]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out + err
    assert len(arrivals) == 2 * 700 and outcomes["429"] == 0
    assert max_requests_in_any_window(arrivals, 1.0) <= 100 + 10 + LEEWAY
    print(f"achieved {len(arrivals) / (arrivals[-1] - arrivals[0]):.1f} requests/s of 100")


SCORED_NOW = """
import os
from engine import *

@resource_provider(rate_limit=RateLimit(requests_per_second=50, burst=5))
def scoring_api():
    import httpx

    client = httpx.Client(base_url=os.environ["FRAUD_API_URL"], timeout=5)
    yield client
    client.close()

@realtime_feature_view(sources=[RequestSource(schema=[Field("user_id", String)])],
    mode="python", features=[Attribute("score", Float64)],
    resource_providers={"api": scoring_api})
def score_now(request, context):
    response = context.resources["api"].post(
        "/v1/score", json={"user_id": request["user_id"], "amount": 1.0}
    )
    response.raise_for_status()
    return {"score": response.json()["score"]}
"""


@pytest.mark.anyio
async def test_server_processes_share_one_limit(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two FeatureServers (two server processes, each declared one of two) take from one
    bucket: together they keep to the whole limit, which alone each would have kept to."""
    job = tmp_path / "scored_now.py"
    job.write_text(SCORED_NOW)
    with MockAPI(rate_limit=50, burst=5 + LEEWAY, log=True) as api:
        monkeypatch.setenv("FRAUD_API_URL", api.url)
        servers = [FeatureServer(job, limiter=redis_url) for _ in range(2)]
        for server in servers:
            await server.start()
        try:
            await asyncio.gather(
                *(
                    server.aget_features("score_now", {"user_id": f"u{i}"})
                    for server in servers
                    for i in range(100)
                )
            )
        finally:
            for server in servers:
                await server.close()
        arrivals = sorted(t for t, _, _ in api.arrivals())
        outcomes = api.stats()["by_outcome"]
    assert len(arrivals) == 200 and outcomes["429"] == 0
    assert max_requests_in_any_window(arrivals, 1.0) <= 50 + 5 + LEEWAY
    # 200 calls at 50/s after a burst of 5 take at least (200 - 5) / 50 seconds
    assert arrivals[-1] - arrivals[0] >= (200 - 5) / 50 * 0.95


def test_an_unreachable_limiter_stops_the_server_before_it_listens(tmp_path: Path) -> None:
    job = tmp_path / "scored_now.py"
    job.write_text(SCORED_NOW)
    result = run_cli("serve", job, "--port", "9", "--limiter", "redis://127.0.0.1:9/0")
    assert result.returncode == 2
    assert "The shared rate limiter at redis://127.0.0.1:9/0 does not answer" in result.stderr
    assert "Serving job" not in result.stderr
