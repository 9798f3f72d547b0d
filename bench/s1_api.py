"""Scenario 1: API-bound python mode, one request per row, no rate limit.

Contenders at each latency: Rivulet with the job's stdlib client (a sync transform on
threads), with an asyncio streams client (an `async def` transform, no threads), with httpx
(sync `httpx.Client`, and `httpx.AsyncClient` with an `async def` transform), the
hand-written asyncio + httpx + aiolimiter script (the reference), and one row at a time
(Tecton's SDK). Figures are steady-state rows/s: Rivulet's over its intervals' compute time,
the script's over its requests; Rivulet's wall-time figure (start-up included) and the CPU
each request cost (the mock API's process and Rivulet's, run overheads included) are in the
detail.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb

from bench import handwritten
from bench.harness import (
    Row,
    Scenario,
    Throughput,
    environment,
    events,
    median_throughput,
    repeats,
    run_backfill,
    throughput,
)
from fixtures.mock_api import MockAPI

CONCURRENCY = 64
CLIENTS = {
    "stdlib": "stdlib http.client",
    "streams": "asyncio streams (async def)",
    "httpx": "httpx.Client",
    "httpx-async": "httpx async",
}


def _rows(path: Path, limit: int) -> list[dict]:
    return duckdb.sql(f"SELECT * FROM '{path}' LIMIT {limit}").to_arrow_table().to_pylist()


def _serial(url: str, rows: list[dict]) -> float:
    """The job's own transform and stdlib client, one row after another."""
    from bench.jobs.api_per_row import score
    from bench.jobs.clients import JsonSession

    context = SimpleNamespace(resources={"api": JsonSession(url)})
    return handwritten.one_at_a_time(rows, lambda row: score(row, context))


def measure(
    workdir: Path, latency_ms: float, sizes: dict[str, int], times: int
) -> tuple[list[Row], bool]:
    """The rows of one latency (ratios to the asyncio script at that latency), and whether
    Rivulet with the job's stdlib client met the target there. `sizes` are the rows per
    client: httpx contenders run fewer, as httpx's pool makes them slow (see README)."""
    limit = CONCURRENCY / (latency_ms / 1000)
    with MockAPI(latency_ms=latency_ms) as api:
        data = _rows(events(workdir, sizes["httpx-async"], days=2), sizes["httpx-async"])
        sample = data[: max(20, int(1.5 / (latency_ms / 1000 + 0.0005)))][:600]  # about 1.5 s
        reference = statistics.median(
            handwritten.asyncio_httpx(data, api.url, CONCURRENCY) for _ in range(times)
        )
        figures: dict[str, Throughput] = {}
        costs: dict[str, tuple[float, float]] = {}
        for client, label in CLIENTS.items():
            path = events(workdir, sizes[client], days=2)
            server_began, engine_began = api.cpu_seconds(), time.process_time()
            with environment(MOCK_API_URL=api.url, BENCH_CLIENT=client, BENCH_EVENTS=str(path)):
                runs = [throughput(run_backfill(workdir, "api_per_row", 2)) for _ in range(times)]
            figures[f"Rivulet, {label}"] = median_throughput(runs)
            served = sizes[client] * times  # what one request costs, the API's share included
            costs[f"Rivulet, {label}"] = (
                (api.cpu_seconds() - server_began) / served,
                (time.process_time() - engine_began) / served,
            )
        with environment(BENCH_EVENTS=str(path)):
            serial = statistics.median(_serial(api.url, sample) for _ in range(times))
    prefix = f"{latency_ms:g} ms · "
    table = [
        Row(f"{prefix}asyncio + httpx script", reference, 1.0, f"{reference / limit:.2f} of limit")
    ]
    for name, figure in figures.items():
        server_cpu, engine_cpu = costs[name]
        detail = (
            f"{figure.steady / limit:.2f} of limit; wall {figure.wall:,.0f} rows/s; CPU per "
            f"request: API {server_cpu * 1e6:,.0f} µs + Rivulet {engine_cpu * 1e6:,.0f} µs"
        )
        table.append(Row(prefix + name, figure.steady, figure.steady / reference, detail))
    detail = f"{serial / limit:.3f} of limit"
    table.append(Row(f"{prefix}one row at a time", serial, serial / reference, detail))
    stdlib = figures[f"Rivulet, {CLIENTS['stdlib']}"].steady
    return table, stdlib >= 0.8 * limit and stdlib >= reference


def run(workdir: Path, quick: bool) -> Scenario:
    times = repeats(quick)
    small = 300 if quick else 600
    large = 1_000 if quick else 4_000
    sizes = {"stdlib": large, "streams": large, "httpx": small * 2, "httpx-async": small}
    fast, fast_met = measure(workdir, 5, sizes, times)
    slow, slow_met = measure(workdir, 50, sizes, times)
    return Scenario(
        name="s1_api",
        title=f"1. API-bound python mode, one request per row, concurrency {CONCURRENCY}",
        unit="rows/s",
        rows=fast + slow,
        target="Rivulet (stdlib client) >= 0.8 of concurrency / latency, and >= the asyncio script",
        met=fast_met and slow_met,
        notes=[
            "limit = concurrency / latency: 12,800 rows/s at 5 ms, 1,280 rows/s at 50 ms",
            "the mock API shares the 2 cores with the contender",
            f"rows per run: {large:,} (stdlib, streams), {sizes['httpx']:,} (httpx.Client), "
            f"{small:,} (httpx async and the script); one row at a time: about 1.5 s of rows",
        ],
    )
