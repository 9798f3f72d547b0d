"""The transforms the bench jobs and the hand-written contenders share (Polars only)."""

from __future__ import annotations

from typing import Any

import polars as pl


def amount_features(df: pl.DataFrame) -> pl.DataFrame:
    """A few arithmetic and string features: CPU-bound, no I/O."""
    return df.select(
        "user_id",
        "timestamp",
        (pl.col("amount") * 2).alias("amount_x2"),
        (pl.col("amount") + 1).log().alias("amount_log"),
        pl.col("text").str.len_chars().cast(pl.Int64).alias("text_length"),
        pl.col("text").str.to_uppercase().alias("text_upper"),
    )


def trivial(row: dict[str, Any]) -> dict[str, Any]:
    """A python-mode transform that does next to nothing."""
    return {"amount_x2": row["amount"] * 2}
