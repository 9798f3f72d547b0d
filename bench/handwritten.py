"""The hand-written contenders: what a careful engineer would write without Rivulet.

`python -m bench.handwritten polars EVENTS DAYS OUTPUT` is scenario 4's pipeline, run as
its own process like `rivulet backfill`; the rest run in the benchmark's process.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from bench.data import START
from bench.jobs import features

_DAY_QUERY = "SELECT * FROM read_parquet($path) WHERE timestamp >= $start AND timestamp < $end"


def days_of(events: Path, days: int) -> Iterator[duckdb.DuckDBPyRelation]:
    """Each day's rows of `events`, as a DuckDB relation (read when converted)."""
    con = duckdb.connect()
    for day in range(days):
        start = START + timedelta(days=day)
        params = {"path": str(events), "start": start, "end": start + timedelta(days=1)}
        yield con.sql(_DAY_QUERY, params=params)


def polars_pipeline(events: Path, days: int, output: Path) -> int:
    """DuckDB read → Polars features → one zstd Parquet file per day; returns the rows."""
    output.mkdir(parents=True, exist_ok=True)
    rows = 0
    for day, relation in enumerate(days_of(events, days)):
        frame = features.amount_features(relation.pl())
        frame.write_parquet(output / f"day-{day:02d}.parquet", compression="zstd")
        rows += frame.height
    return rows


def plain_loop(events: Path, days: int, output: Path) -> tuple[int, float]:
    """Scenario 5's reference: each day's rows as dicts through `features.trivial` in a
    plain loop, written as Parquet. Returns the rows and the seconds of the loop alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output.mkdir(parents=True, exist_ok=True)
    rows, looping = 0, 0.0
    for day, relation in enumerate(days_of(events, days)):
        batch = relation.to_arrow_table().to_pylist()
        began = time.perf_counter()
        done = [{**row, **features.trivial(row)} for row in batch]
        looping += time.perf_counter() - began
        pq.write_table(pa.Table.from_pylist(done), output / f"day-{day:02d}.parquet")
        rows += len(done)
    return rows, looping


def one_at_a_time(rows: list[dict[str, Any]], call: Callable[[dict[str, Any]], Any]) -> float:
    """Rows/s of `call` on each row in turn, as Tecton's SDK runs a python-mode transform."""
    began = time.perf_counter()
    for row in rows:
        call(row)
    return len(rows) / (time.perf_counter() - began)


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    return {"user_id": row["user_id"], "amount": row["amount"]}


async def _gathered(
    rows: list[dict[str, Any]], score: Callable[[dict[str, Any]], Awaitable[float]]
) -> float:
    """Rows/s of `score` awaited on every row at once, from the first request to the last
    answer."""
    began = time.perf_counter()
    scores = await asyncio.gather(*(score(row) for row in rows))
    return len(scores) / (time.perf_counter() - began)


def asyncio_aiohttp(
    rows: list[dict[str, Any]], url: str, concurrency: int, rate: float | None = None
) -> float:
    """Scenario 1's reference: rows/s of one `/v1/score` request per row with one
    aiohttp.ClientSession, `concurrency` in flight (a semaphore, and as many pooled
    connections), and an aiolimiter bucket of `rate`/s when given."""
    import aiohttp
    from aiolimiter import AsyncLimiter

    async def main() -> float:
        limiter = AsyncLimiter(rate, 1) if rate else None
        gate = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

            async def score(row: dict[str, Any]) -> float:
                async with gate:
                    if limiter:
                        await limiter.acquire()
                    async with session.post("/v1/score", json=_payload(row)) as response:
                        response.raise_for_status()
                        return (await response.json())["score"]

            return await _gathered(rows, score)

    return asyncio.run(main())


def asyncio_httpx(
    rows: list[dict[str, Any]], url: str, concurrency: int, rate: float | None = None
) -> float:
    """The same script with httpx.AsyncClient (a pool of `concurrency` connections).
    httpcore's pool bookkeeping caps it near one core's worth of requests (see README)."""
    import httpx
    from aiolimiter import AsyncLimiter

    async def main() -> float:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        limiter = AsyncLimiter(rate, 1) if rate else None
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

            async def score(row: dict[str, Any]) -> float:
                async with gate:
                    if limiter:
                        await limiter.acquire()
                    response = await client.post("/v1/score", json=_payload(row))
                    response.raise_for_status()
                    return response.json()["score"]

            return await _gathered(rows, score)

    return asyncio.run(main())


if __name__ == "__main__":
    _, kind, events_path, days_text, output_dir = sys.argv
    assert kind == "polars", kind
    polars_pipeline(Path(events_path), int(days_text), Path(output_dir))
