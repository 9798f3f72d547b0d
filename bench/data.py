"""Synthetic event data for benchmarks, generated with Polars (fast, deterministic)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

START = datetime(2024, 10, 26)


def write_events(path: Path, rows: int, days: int) -> Path:
    """Write `rows` events spread evenly over `days` days from START to one Parquet file."""
    step_us = int(timedelta(days=days) / timedelta(microseconds=1)) // rows
    index = pl.int_range(0, rows, dtype=pl.Int64)
    frame = pl.select(
        ("u" + (index % 1000).cast(pl.String)).alias("user_id"),
        (pl.lit(START, pl.Datetime("us")) + pl.duration(microseconds=index * step_us)).alias(
            "timestamp"
        ),
        ("review number " + index.cast(pl.String) + " of a product").alias("text"),
        ((index % 10_000).cast(pl.Float64) / 100).alias("amount"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path, row_group_size=100_000)
    return path


def write_transactions(path: Path, rows: int, days: int, users: int) -> Path:
    """Write `rows` transactions of `users` users spread evenly over `days` days from START
    to one Parquet file, each user's turn scattered (the row index times a prime, modulo)."""
    step_us = int(timedelta(days=days) / timedelta(microseconds=1)) // rows
    index = pl.int_range(0, rows, dtype=pl.Int64)
    frame = pl.select(
        ("u" + (index * 7_919 % users).cast(pl.String)).alias("user_id"),
        (pl.lit(START, pl.Datetime("us")) + pl.duration(microseconds=index * step_us)).alias(
            "timestamp"
        ),
        ((index * 31 % 100_000).cast(pl.Float64) / 100).alias("amount"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path, row_group_size=100_000)
    return path
