"""Scenario 8: the seed's realtime view served over HTTP, against a hand-written FastAPI
endpoint making the same openai call; 32 clients from a load generator of its own process.

Each server runs in its own process(es) (uvicorn), the mock API at 5 ms in another, the
load generator (`bench.load`) in a third, all on the same cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.harness import ROOT, Row, Scenario, repeats
from fixtures.mock_api import MockAPI

LATENCY_MS = 5
CLIENTS = 32
JOB = ROOT / "bench" / "jobs" / "realtime.py"


@contextlib.contextmanager
def serving(command: Sequence[str], env: dict[str, str]) -> Iterator[str]:
    """Start a server on a free port (`{port}` in `command`); yield its URL once healthy."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [part.format(port=port) for part in command], cwd=ROOT,
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[2]} did not start: {proc.stderr.read()}")
            time.sleep(0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def load(url: str, service: str, requests: int, *extra: str, clients: int = CLIENTS) -> dict:
    """Run the load generator against `url`; its figures."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", url, "--service", service, "--clients",
         str(clients), "--requests", str(requests), *extra],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    figures = json.loads(done.stdout)
    if figures["errors"]:
        raise RuntimeError(f"{figures['errors']} of {requests} requests to {url} failed")
    return figures


def run(workdir: Path, quick: bool) -> Scenario:
    requests = 600 if quick else 3000
    rivulet = [sys.executable, "-m", "engine", "serve", str(JOB), "--port", "{port}"]
    contenders = {
        "hand-written FastAPI + openai, 1 process": [
            sys.executable, "-m", "uvicorn", "bench.handwritten_server:app", "--port", "{port}",
            "--log-level", "warning", "--no-access-log",
        ],
        "Rivulet serve, 1 process": rivulet,
        "Rivulet serve, --workers 2": [*rivulet, "--workers", "2"],
    }  # fmt: skip
    figures: dict[str, dict] = {}
    alone: dict[str, float] = {}  # p50 with one client: the time a request takes, unqueued
    calls: dict[str, float] = {}
    with MockAPI(latency_ms=LATENCY_MS) as api:
        env = {
            "OPENAI_BASE_URL": api.base_url,
            "OPENAI_API_KEY": "bench",
            "RIVULET_SECRET_OPENAI_EMBEDDINGS__OPEN_AI": "bench",
        }
        for name, command in contenders.items():
            with serving(command, env) as url:
                load(url, "realtime_embedding", requests // 5)  # warm-up: connections, caches
                runs = [load(url, "realtime_embedding", requests) for _ in range(repeats(quick))]
                one = load(url, "realtime_embedding", requests // 6, clients=1)
                alone[name] = statistics.median(one["latencies_ms"])
            figures[name] = max(runs, key=lambda run: requests / run["seconds"])
        mix = ("--hot", "20", "--repeat", "0.9")
        with serving(rivulet, env) as url:
            for service in ("realtime_embedding", "cached_embedding"):
                before = api.stats()["requests"]
                figures[service] = load(url, service, requests, *mix)
                calls[service] = (api.stats()["requests"] - before) / requests
    rate = {name: requests / run["seconds"] for name, run in figures.items()}
    p50 = {name: statistics.median(run["latencies_ms"]) for name, run in figures.items()}
    p99 = {name: _quantile(run["latencies_ms"], 0.99) for name, run in figures.items()}
    hand, one, two = contenders
    detail = {
        name: f"p50 {p50[name]:.1f} ms, p99 {p99[name]:.1f} ms; 1 client: p50 {alone[name]:.2f} ms"
        for name in contenders
    }
    detail[two] += f"; {rate[two] / rate[one]:.2f}x of 1 process"
    rows = [Row(name, rate[name], rate[name] / rate[hand], detail[name]) for name in contenders]
    for service, label in (("realtime_embedding", "no cache"), ("cached_embedding", "Cache")):
        rows.append(
            Row(
                f"Rivulet serve, 90% repeated inputs, {label}",
                rate[service],
                rate[service] / rate[hand],
                f"{calls[service]:.2f} API calls a request; p50 {p50[service]:.1f} ms",
            )
        )
    added = alone[one] - alone[hand]
    met = rate[one] >= 0.9 * rate[hand] and rate[two] >= 1.5 * rate[one] and added <= 1.0
    return Scenario(
        name="s8_serving",
        title=f"8. Realtime serving: the seed's view, {CLIENTS} clients, {LATENCY_MS} ms API",
        unit="requests/s",
        rows=rows,
        target=(
            ">= 0.9 of hand-written with 1 process, --workers 2 >= 1.5x of 1 process, "
            f"median added <= 1 ms (added, 1 client: {added:+.2f} ms)"
        ),
        met=met,
        notes=[
            f"{requests:,} requests per run, best of {repeats(quick)} after a warm-up; "
            "the load generator, the server(s) and the mock API share the 2 cores",
            "the hand-written endpoint is bench/handwritten_server.py (sync def, one client)",
        ],
    )


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
