"""Scenario 3: batched API calls (polars mode, one request per micro-batch of 100 texts)
against per-row calls (python mode), same data, same client, same mock embeddings API."""

from __future__ import annotations

from pathlib import Path

from bench.harness import (
    Row,
    Scenario,
    environment,
    events,
    median_throughput,
    repeats,
    run_backfill,
    throughput,
)
from fixtures.mock_api import MockAPI

LATENCY_MS = 20


def run(workdir: Path, quick: bool) -> Scenario:
    size = 1_000 if quick else 4_000
    figures, requests = {}, {}
    path = events(workdir, size, days=2)
    with (
        MockAPI(latency_ms=LATENCY_MS) as api,
        environment(BENCH_EVENTS=str(path)),
        environment(MOCK_API_URL=api.url),
    ):
        for view in ("per_row", "batched"):
            before = api.stats()["requests"]
            runs = [
                throughput(run_backfill(workdir, "embed", 2, feature_views=[view]))
                for _ in range(repeats(quick))
            ]
            figures[view] = median_throughput(runs)
            requests[view] = (api.stats()["requests"] - before) // len(runs)
    reference = figures["per_row"].steady
    rows = [
        Row(
            f"Rivulet, {view.replace('_', '-')}",
            figure.steady,
            figure.steady / reference,
            f"{requests[view]:,} requests per run; wall {figure.wall:,.0f} rows/s",
        )
        for view, figure in figures.items()
    ]
    return Scenario(
        name="s3_batched",
        title=f"3. Embeddings of {size:,} texts, {LATENCY_MS} ms API: batched vs per-row",
        unit="rows/s",
        rows=rows,
        target="none set (batched should beat per-row)",
        met=None,
        notes=[
            "per-row: python mode, 64 calls in flight; "
            "batched: polars mode, 100 texts a request, 4 in flight"
        ],
    )
