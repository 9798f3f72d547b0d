"""Rivulet: batch feature materialization with external API calls in the loop.

Job files import their definitions from here: `from engine import batch_feature_view, ...`.
The run functions load on first use, so importing definitions (and `rivulet --help`) stays
free of Arrow, DuckDB and Polars.
"""

import importlib
from typing import TYPE_CHECKING, Any

from engine.define.aggregates import Aggregate, LifetimeWindow, TimeWindow, TimeWindowSeries
from engine.define.environment import Environment
from engine.define.feature_views import (
    BatchFeatureView,
    Cache,
    RealtimeFeatureView,
    batch_feature_view,
    realtime_feature_view,
)
from engine.define.fields import Attribute, Entity, Field
from engine.define.golden import GoldenTest
from engine.define.policies import RateLimit, RetryPolicy
from engine.define.resources import ResourceProvider, resource_provider
from engine.define.secrets import Secret
from engine.define.services import FeatureService
from engine.define.sources import (
    BatchSource,
    DuckDBConfig,
    FileConfig,
    FilteredSource,
    PythonConfig,
    RequestSource,
    TectonTimeConstant,
)
from engine.define.types import (
    Array,
    Bool,
    DataType,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    Timestamp,
)
from engine.errors import RivuletError

if TYPE_CHECKING:
    from engine.materialize import backfill, plan, run_due
    from engine.retrieve.historical import get_historical_features
    from engine.retrieve.offline import read_features
    from engine.serve.server import FeatureServer
    from engine.summary import RunSummary

_LAZY = {
    "FeatureServer": "engine.serve.server",
    "RunSummary": "engine.summary",
    "get_historical_features": "engine.retrieve.historical",
    "read_features": "engine.retrieve.offline",
    "backfill": "engine.materialize",
    "plan": "engine.materialize",
    "run_due": "engine.materialize",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "Aggregate",
    "Array",
    "Attribute",
    "BatchFeatureView",
    "BatchSource",
    "Bool",
    "Cache",
    "DataType",
    "DuckDBConfig",
    "Entity",
    "Environment",
    "FeatureServer",
    "FeatureService",
    "Field",
    "FileConfig",
    "FilteredSource",
    "Float32",
    "Float64",
    "GoldenTest",
    "Int32",
    "Int64",
    "LifetimeWindow",
    "PythonConfig",
    "RateLimit",
    "RealtimeFeatureView",
    "RequestSource",
    "ResourceProvider",
    "RetryPolicy",
    "RivuletError",
    "RunSummary",
    "Secret",
    "String",
    "TectonTimeConstant",
    "TimeWindow",
    "TimeWindowSeries",
    "Timestamp",
    "backfill",
    "batch_feature_view",
    "get_historical_features",
    "plan",
    "read_features",
    "realtime_feature_view",
    "resource_provider",
    "run_due",
]
