"""Scenario 1: API-bound python mode, one request per row, no rate limit.

Contenders at each latency: the hand-written asyncio + aiohttp + aiolimiter script (the
reference), the same script with httpx.AsyncClient, Rivulet with the job's stdlib client (a
sync transform on threads), with an asyncio streams client (an `async def` transform, no
threads), with httpx (sync `httpx.Client`, and `httpx.AsyncClient` with an `async def`
transform), and one row at a time (Tecton's SDK). Figures are steady-state rows/s:
Rivulet's over its intervals' compute time, the scripts' over their requests; Rivulet's
wall-time figure (start-up included) and the CPU each request cost (the mock API's process
and the benchmark's, run overheads included) are in the detail.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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


def _script(
    api: MockAPI, script: Callable[..., float], rows: list[dict[str, Any]], times: int
) -> tuple[float, float, float]:
    """The median rows/s of a hand-written script over `rows`, and the CPU one request cost
    the mock API's process and this one."""
    server_began, script_began = api.cpu_seconds(), time.process_time()
    figure = statistics.median(script(rows, api.url, CONCURRENCY) for _ in range(times))
    served = len(rows) * times
    server = (api.cpu_seconds() - server_began) / served
    return figure, server, (time.process_time() - script_began) / served


def measure(
    workdir: Path, latency_ms: float, sizes: dict[str, int], times: int
) -> tuple[list[Row], bool]:
    """The rows of one latency (ratios to the aiohttp script at that latency), and whether
    Rivulet with the job's stdlib client met the target there. `sizes` are the rows per
    client (the aiohttp script runs the stdlib client's): httpx contenders run fewer, as
    httpx's pool makes them slow (see README)."""
    limit = CONCURRENCY / (latency_ms / 1000)
    with MockAPI(latency_ms=latency_ms) as api:
        data = _rows(events(workdir, sizes["stdlib"], days=2), sizes["stdlib"])
        sample = data[: max(20, int(1.5 / (latency_ms / 1000 + 0.0005)))][:600]  # about 1.5 s
        scripts = {
            "asyncio + aiohttp script": _script(api, handwritten.asyncio_aiohttp, data, times),
            "asyncio + httpx script": _script(
                api, handwritten.asyncio_httpx, data[: sizes["httpx-async"]], times
            ),
        }
        reference = scripts["asyncio + aiohttp script"][0]
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
    table = []
    for name, (figure, server_cpu, script_cpu) in scripts.items():
        detail = (
            f"{figure / limit:.2f} of limit; CPU per request: API {server_cpu * 1e6:,.0f} µs "
            f"+ script {script_cpu * 1e6:,.0f} µs"
        )
        table.append(Row(prefix + name, figure, figure / reference, detail))
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
        target="Rivulet (stdlib client) >= 0.8 of concurrency / latency, and >= the aiohttp script",
        met=fast_met and slow_met,
        notes=[
            "limit = concurrency / latency: 12,800 rows/s at 5 ms, 1,280 rows/s at 50 ms",
            "the mock API shares the 2 cores with the contender",
            f"rows per run: {large:,} (aiohttp script, stdlib, streams), {sizes['httpx']:,} "
            f"(httpx.Client), {small:,} (httpx async and the httpx script); one row at a time: "
            "about 1.5 s of rows",
        ],
    )
