"""Rivulet: batch feature materialization with external API calls in the loop.

Job files import their definitions from here: `from engine import batch_feature_view, ...`.
"""

from engine.define.environment import Environment
from engine.define.feature_views import (
    BatchFeatureView,
    RealtimeFeatureView,
    batch_feature_view,
    realtime_feature_view,
)
from engine.define.fields import Attribute, Entity, Field
from engine.define.policies import RateLimit, RetryPolicy
from engine.define.resources import ResourceProvider, resource_provider
from engine.define.secrets import Secret
from engine.define.sources import BatchSource, DuckDBConfig, FileConfig, PythonConfig, RequestSource
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
from engine.record.summary import RunSummary
from engine.run import backfill, plan, run_due

__all__ = [
    "Array",
    "Attribute",
    "BatchFeatureView",
    "BatchSource",
    "Bool",
    "DataType",
    "DuckDBConfig",
    "Entity",
    "Environment",
    "Field",
    "FileConfig",
    "Float32",
    "Float64",
    "Int32",
    "Int64",
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
    "Timestamp",
    "backfill",
    "batch_feature_view",
    "plan",
    "realtime_feature_view",
    "resource_provider",
    "run_due",
]
