"""Aggregation functions with a parameter, imported as from Tecton's module of that name:
`from engine.aggregation_functions import approx_percentile, last_distinct`."""

from engine.define.aggregates import (
    approx_count_distinct,
    approx_percentile,
    first,
    first_distinct,
    last,
    last_distinct,
)

__all__ = [
    "approx_count_distinct",
    "approx_percentile",
    "first",
    "first_distinct",
    "last",
    "last_distinct",
]
