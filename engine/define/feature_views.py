"""`@batch_feature_view` and `@realtime_feature_view`: declarations, validated when made."""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from engine.define.aggregates import Aggregate
from engine.define.fields import Attribute, Entity, Field
from engine.define.policies import RetryPolicy, timeout_seconds
from engine.define.resources import ResourceProvider, SecretSpec, check_secrets
from engine.define.schedule import Months, Schedule, as_utc, parse_duration, parse_schedule
from engine.define.sources import BatchSource, FilteredSource, PythonConfig, RequestSource
from engine.define.types import DataType, Timestamp
from engine.errors import DefinitionError

if TYPE_CHECKING:
    import pyarrow as pa

BATCH_MODES = ("python", "pandas", "polars", "pyarrow")
ERROR_POLICIES = ("fail", "skip", "null")
REALTIME_MODES = ("python", "pandas")
REALTIME_ERROR_POLICIES = ("fail", "null")
# Seconds one attempt of a request's call may take unless the view or its resources say.
REALTIME_TIMEOUT = {"python": 10.0, "pandas": 10.0}
REALTIME_CONCURRENCY = 64  # calls of one view in flight at once in one server process
DEFAULT_MICRO_BATCH_SIZE = 10_000
# A frame-mode view without resources makes no calls to spread over micro-batches: without a
# micro_batch_size, its transform gets frames of about this much source data instead.
WHOLE_FRAME_BYTES = 16 * 1024 * 1024
DEFAULT_CONCURRENCY = {"python": 64, "pandas": 4, "polars": 4, "pyarrow": 4}
# Seconds one call may take: a row's API call, or a whole micro-batch in frame modes.
DEFAULT_TIMEOUT = {"python": 60.0, "pandas": 600.0, "polars": 600.0, "pyarrow": 600.0}


class _CallsTransform:
    """How either kind of view calls its transform: the call policy its resources declare,
    overridden by the view's own. Needs `function`, `mode`, `resource_providers`, `retry`
    and `timeout` on the view."""

    function: Callable[..., Any]
    mode: str
    resource_providers: tuple[tuple[str, ResourceProvider], ...]
    retry: RetryPolicy | None
    timeout: float | None
    _default_timeout: ClassVar[dict[str, float]]

    @property
    def call_timeout(self) -> float:
        """Seconds one attempt may take: the view's `timeout`, else the longest its
        resources declare, else the mode's default."""
        declared = [p.timeout for _, p in self.resource_providers if p.timeout is not None]
        if self.timeout is not None:
            return self.timeout
        return max(declared, default=self._default_timeout[self.mode])

    @property
    def retry_policy(self) -> RetryPolicy:
        """Its own `retry`, else the most patient of its resources', else the default."""
        declared = [p.retry for _, p in self.resource_providers if p.retry is not None]
        if self.retry is not None:
            return self.retry
        return max(declared, key=lambda policy: policy.max_attempts, default=RetryPolicy())

    @functools.cached_property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    @functools.cached_property
    def takes_context(self) -> bool:
        return "context" in inspect.signature(self.function).parameters


@dataclass(frozen=True, eq=False)
class BatchFeatureView(_CallsTransform):
    """A declared batch feature view: its transform, sources, keys, features and schedule.

    `sources` are read for each interval over their own range (the interval itself unless
    unfiltered or given a look-back); `parameters` names the transform's parameter for each.
    The first source is handed to the transform in micro-batches, every other one whole.
    With `aggregation_interval`, every feature is an Aggregate over a column the transform
    returns (`row_features`), and the offline store keeps partial aggregates per interval.

    Only a worker calls `function`. `micro_batch_size` is the number of source rows handed
    to the transform per batch (frame modes) or grouped per written batch (python mode);
    when it is None, it is 10,000, except that a frame-mode view without resources gets
    frames of about WHOLE_FRAME_BYTES of source data (`whole_frames`), as a vectorized
    engine wants them;
    `concurrency` is how many transform calls may be in flight at once in one worker.
    `retry` overrides the retry policy of its resources. `on_error` says what a call that
    still fails after its retries does: "fail" the interval (nothing of it is committed),
    "skip" its rows, or write them with "null" features; skipped and nulled rows go to a
    dead-letter file under `<output>/_errors/<view>/`.
    """

    name: str
    function: Callable[..., Any]
    mode: str
    sources: tuple[FilteredSource, ...]
    parameters: tuple[str, ...]
    entities: tuple[Entity, ...]
    timestamp_field: str
    features: tuple[Attribute, ...] | tuple[Aggregate, ...]
    aggregation_interval: timedelta | None
    batch_schedule: Schedule
    feature_start_time: datetime
    resource_providers: tuple[tuple[str, ResourceProvider], ...]
    secrets: tuple[tuple[str, SecretSpec], ...]
    environment: str | None
    offline: bool
    online: bool
    ttl: timedelta | None
    micro_batch_size: int | None
    concurrency: int
    retry: RetryPolicy | None
    on_error: str
    timeout: float | None
    description: str | None
    owner: str | None
    tags: tuple[tuple[str, str], ...]
    _default_timeout = DEFAULT_TIMEOUT  # 60 s a row, 600 s a micro-batch

    @property
    def source(self) -> BatchSource:
        """The first source: the one handed to the transform in micro-batches."""
        return self.sources[0].source

    @functools.cached_property
    def aggregates(self) -> tuple[Aggregate, ...]:
        """Its Aggregate features; none for a view of Attributes."""
        return tuple(f for f in self.features if isinstance(f, Aggregate))

    @functools.cached_property
    def row_features(self) -> tuple[Attribute, ...]:
        """What the transform returns besides keys and timestamp: the features, or for an
        aggregate view each input column once."""
        if not self.aggregates:
            return tuple(f for f in self.features if isinstance(f, Attribute))
        columns = {a.column: Attribute(a.column, a.input_column.dtype) for a in self.aggregates}
        return tuple(columns.values())

    @property
    def reads_beyond_interval(self) -> bool:
        """Whether a source is read over more than the interval: the transform's rows outside
        the interval are then dropped, as Tecton drops them, instead of failing it."""
        return not all(source.is_interval for source in self.sources)

    @property
    def batch_rows(self) -> int:
        """Source rows per batch read: `micro_batch_size`, or 10,000 when it is None."""
        return self.micro_batch_size or DEFAULT_MICRO_BATCH_SIZE

    @property
    def whole_frames(self) -> bool:
        """Whether the transform gets frames of about WHOLE_FRAME_BYTES, not micro-batches:
        a frame mode, no resources or secrets (no calls to spread), no micro_batch_size."""
        calls = self.resource_providers or self.secrets
        return self.mode != "python" and not calls and not self.micro_batch_size

    @functools.cached_property
    def join_keys(self) -> tuple[Field, ...]:
        return tuple(key for entity in self.entities for key in entity.join_keys)

    @functools.cached_property
    def carried_columns(self) -> tuple[str, ...]:
        """The join keys and the timestamp: what python mode carries from source to output."""
        return (*(k.name for k in self.join_keys), self.timestamp_field)

    @functools.cached_property
    def feature_names(self) -> frozenset[str]:
        """The names of `row_features`: what the transform returns."""
        return frozenset(f.name for f in self.row_features)

    def window_field_of(self, source: FilteredSource) -> str:
        """The column of `source` its range filters on."""
        return source.batch_config.timestamp_field or self.timestamp_field

    @property
    def window_field(self) -> str:
        """The first source's column the interval window filters on."""
        return self.window_field_of(self.sources[0])

    @property
    def data_delay(self) -> timedelta:
        """How long after an interval ends its sources' data is complete."""
        return max(source.batch_config.data_delay for source in self.sources)

    def output_schema(self) -> pa.Schema:
        """Join keys, the timestamp, then the features, with their declared Arrow types:
        what reading the view back gives."""
        return self._schema(self.features)

    def row_schema(self) -> pa.Schema:
        """Join keys, the timestamp, then `row_features`: what the transform returns."""
        return self._schema(self.row_features)

    def _schema(self, features: Sequence[Attribute | Aggregate]) -> pa.Schema:
        import pyarrow as pa

        columns = [(k.name, k.dtype) for k in self.join_keys]
        columns += [(self.timestamp_field, Timestamp)]
        columns += [(f.name, f.dtype) for f in features]
        return pa.schema([pa.field(name, dtype.to_arrow()) for name, dtype in columns])

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of everything that decides the output; a change marks old output stale."""
        parts = {
            "mode": self.mode,
            "on_error": self.on_error,
            "source": _config_text(self.sources[0]),
            "keys": repr(self.join_keys),
            "timestamp_field": self.timestamp_field,
            "features": repr(tuple(_feature_key(f) for f in self.features)),
            "batch_schedule": str(self.batch_schedule),
            "feature_start_time": self.feature_start_time.isoformat(),
            "transform": _source_text(self.function),
            # Only what decides the output: rate limits, retries, concurrency and thread
            # safety change how calls are made, not what they return.
            "resources": repr(
                tuple((k, p.name, _source_text(p.function)) for k, p in self.resource_providers)
            ),
        }
        if self.reads_beyond_interval or len(self.sources) > 1 or self.aggregates:
            parts["sources"] = [
                (p, _config_text(s)) for p, s in zip(self.parameters, self.sources, strict=True)
            ]
            parts["aggregation_interval"] = str(self.aggregation_interval)
        blob = json.dumps(parts, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def run_transformation(
        self,
        start_time: datetime,
        end_time: datetime,
        mock_inputs: Mapping[str, Any],
        resources: Mapping[str, Any] | None = None,
    ) -> Any:
        """The transform's rows for the interval [start_time, end_time) of `mock_inputs`
        (a frame per source, by parameter or source name), each source cut to its range as a
        run reads it; `resources` gives fakes by name, the rest are built from their
        providers. The result has `.to_pandas()`, `.to_polars()` and `.to_arrow()`.

        Example:
            rows = user_counts.run_transformation(datetime(2024, 5, 1), datetime(2024, 5, 2),
                                                  mock_inputs={"transactions": frame})
        """
        from engine.testing.transformation import run_transformation

        return run_transformation(self, start_time, end_time, mock_inputs, resources)

    def test_run(
        self,
        start_time: datetime,
        end_time: datetime,
        resources: Mapping[str, Any] | None = None,
        **mock_inputs: Any,
    ) -> Any:
        """Tecton's older form of `run_transformation`, the inputs as keyword arguments."""
        return self.run_transformation(start_time, end_time, mock_inputs, resources)

    def get_features_for_events(
        self,
        events: Any,
        *,
        mock_inputs: Mapping[str, Any] | None = None,
        timestamp_field: str | None = None,
        output: str = "offline_store",
        resources: Mapping[str, Any] | None = None,
    ) -> Any:
        """The events with this view's features as of each event's time, in columns named
        `<view>__<feature>` as Tecton names them. With `mock_inputs`, the features are
        computed from them (every interval the events need); otherwise read from the offline
        store at `output`. Returns a result with `.to_pandas()`, `.to_polars()`, `.to_arrow()`.

        Example:
            joined = user_counts.get_features_for_events(events, mock_inputs={"t": frame})
        """
        from engine.testing.transformation import features_for_events

        return features_for_events(self, events, mock_inputs, timestamp_field, output, resources)

    def get_historical_features(self, spine: Any, **options: Any) -> Any:
        """Tecton's other name for `get_features_for_events`."""
        return self.get_features_for_events(spine, **options)


@dataclass(frozen=True, eq=False)
class RealtimeFeatureView(_CallsTransform):
    """A declared realtime feature view: a transform of one request's fields, with resources.

    Python mode hands each source's fields as a dict and takes a dict of features back;
    pandas mode hands one-row DataFrames and takes a DataFrame. A source that is an online
    batch view gives its features for the request's join keys, read from the online store
    (each None when missing or expired). `timeout` bounds a request
    (every attempt and retry of it); a call that still fails follows `on_error`: "fail"
    answers an error naming the view, "null" answers null features with status ERROR.
    `cache` keeps answers by request inputs.
    """

    name: str
    function: Callable[..., Any]
    mode: str
    sources: tuple[RequestSource | BatchFeatureView, ...]
    features: tuple[Attribute, ...]
    resource_providers: tuple[tuple[str, ResourceProvider], ...]
    secrets: tuple[tuple[str, SecretSpec], ...]
    environment: str | None
    timeout: float | None
    on_error: str
    cache: Cache | None
    concurrency: int
    retry: RetryPolicy | None
    description: str | None
    owner: str | None
    tags: tuple[tuple[str, str], ...]
    _default_timeout = REALTIME_TIMEOUT

    @functools.cached_property
    def source_names(self) -> tuple[str, ...]:
        """The transform's parameter for each source, in order: the keys of `input_data`."""
        params = inspect.signature(self.function).parameters
        return tuple(name for name in params if name != "context")

    @functools.cached_property
    def request_fields(self) -> tuple[Field, ...]:
        """Every field the view's request sources need, in order, each once."""
        fields: dict[str, Field] = {}
        for source in self.sources:
            for field in source.schema if isinstance(source, RequestSource) else ():
                fields.setdefault(field.name, field)
        return tuple(fields.values())

    @functools.cached_property
    def batch_sources(self) -> tuple[BatchFeatureView, ...]:
        """The online batch views it reads, in source order."""
        return tuple(s for s in self.sources if isinstance(s, BatchFeatureView))

    def run_transformation(
        self, input_data: Mapping[str, Any], resources: Mapping[str, Any] | None = None
    ) -> Any:
        """Run the transform once, as serving does, on `input_data` (one dict per source,
        or one-row DataFrames in pandas mode, by parameter name): features are checked
        against the declaration. `resources` gives fakes by name; the rest are built from
        their providers and torn down after.

        Example:
            embedding.run_transformation({"input_request": {"input": "hi"}},
                                         resources={"openai": FakeOpenAI()})
        """
        from engine.serve.transform import run_transformation

        return run_transformation(self, input_data, resources)

    def test_run(
        self, mock_inputs: Mapping[str, Any], resources: Mapping[str, Any] | None = None
    ) -> Any:
        """Tecton's older name for `run_transformation`."""
        return self.run_transformation(mock_inputs, resources)


@dataclass(frozen=True)
class Cache:
    """Answers of a realtime view kept by request inputs: `Cache(ttl=timedelta(minutes=5))`.

    An answer is reused for `ttl` after it was computed; at most `max_entries` are kept
    (least recently used go first). Concurrent identical requests make one call.
    """

    ttl: timedelta
    max_entries: int = 10_000

    def __post_init__(self) -> None:
        ttl = self.ttl
        if isinstance(ttl, int | float) and not isinstance(ttl, bool):
            ttl = timedelta(seconds=ttl) if ttl > 0 else f"{ttl} s"
        try:
            object.__setattr__(self, "ttl", parse_duration(ttl))
        except ValueError as exc:
            raise DefinitionError(f"Cache: ttl {exc}.") from None
        if not isinstance(self.max_entries, int) or self.max_entries < 1:
            raise DefinitionError(
                f"Cache: max_entries must be a positive integer, not {self.max_entries!r}."
            )


def _config_text(source: FilteredSource) -> str:
    config = source.batch_config
    text = _source_text(config.loader) if isinstance(config, PythonConfig) else repr(config)
    return text if source.is_interval else f"{text} from {source.start} to {source.end}"


def _feature_key(feature: Attribute | Aggregate) -> tuple[Any, ...]:
    """What of a feature decides the output."""
    if isinstance(feature, Aggregate):
        return (feature.name, feature.input_column, feature.function, feature.time_window)
    return (feature.name, feature.dtype)


def _source_text(function: Callable[..., Any]) -> str:
    """The function's source from its `def` on: decorators declare policies (retries, rate
    limits, concurrency, timeouts) that change how calls are made, not what they return."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        code = getattr(function, "__code__", None)
        return code.co_code.hex() if code else repr(function)
    try:
        [node, *_] = ast.parse(source).body
    except (SyntaxError, ValueError):
        return source
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.decorator_list:
        return "\n".join(source.splitlines()[node.lineno - 1 :])
    return source


def _check_mode(view: str, mode: str, modes: Sequence[str]) -> None:
    if mode not in modes:
        raise DefinitionError(
            f"Feature view '{view}' has mode '{mode}'; Rivulet supports {', '.join(modes)}."
        )


def _check_parameters(view: str, function: Callable[..., Any], sources: Sequence[Any]) -> None:
    params = [p for p in inspect.signature(function).parameters.values() if p.name != "context"]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY) for p in params) or len(
        params
    ) != len(sources):
        names = ", ".join(p.name for p in params) or "none"
        raise DefinitionError(
            f"Feature view '{view}': the transform takes {len(params)} input parameter(s) "
            f"({names}) besides `context`, but {len(sources)} source(s) are declared; "
            f"give it one parameter per source."
        )


def _check_realtime_sources(view: str, sources: Sequence[Any]) -> None:
    """Request sources, and batch views served online; a request field named by several
    sources must have one type."""
    kinds = (RequestSource, BatchFeatureView)
    if not sources or not all(isinstance(source, kinds) for source in sources):
        raise DefinitionError(
            f"Feature view '{view}' needs sources=[RequestSource(...), ...], optionally with "
            f"batch feature views declared online=True."
        )
    for source in sources:
        if isinstance(source, BatchFeatureView) and not source.online:
            raise DefinitionError(
                f"Feature view '{view}' reads batch feature view '{source.name}', which is not "
                f"online=True; declare it online=True so serving can read its newest values."
            )
    seen: dict[str, Field] = {}
    requests = [source for source in sources if isinstance(source, RequestSource)]
    for field in (field for source in requests for field in source.schema):
        if seen.setdefault(field.name, field).dtype != field.dtype:
            raise DefinitionError(
                f"Feature view '{view}': request field '{field.name}' is declared as both "
                f"{seen[field.name].dtype!r} and {field.dtype!r}; give it one type."
            )


def _check_features(view: str, features: Sequence[Any], taken: set[str]) -> tuple[Any, ...]:
    if not features:
        raise DefinitionError(f"Feature view '{view}' declares no features.")
    seen = set(taken)
    for feature in features:
        if not isinstance(feature, Attribute | Aggregate):
            raise DefinitionError(
                f"Feature view '{view}': features must be Attribute(name, dtype) (or Aggregate "
                f"in a view with an aggregation_interval), not {feature!r}."
            )
        if not isinstance(feature.dtype, DataType):
            raise DefinitionError(
                f"Feature view '{view}': feature '{feature.name}' has unsupported type "
                f"{feature.dtype!r}; use String, Int32, Int64, Float32, Float64, Bool, "
                f"Timestamp or Array(...)."
            )
        if feature.name in seen:
            raise DefinitionError(
                f"Feature view '{view}': the name '{feature.name}' is used twice "
                f"(features, join keys and the timestamp field need distinct names)."
            )
        seen.add(feature.name)
    return tuple(features)


def _resource_names_used(function: Callable[..., Any]) -> set[str]:
    """Names the transform looks up literally: `x.resources["name"]`, `x.resources.get("name")`."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "resources"
            and isinstance(node.slice, ast.Constant)
        ):
            names.add(node.slice.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "resources"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
    return names


def _check_resources(
    view: str, function: Callable[..., Any], providers: Mapping[str, Any] | None
) -> tuple[tuple[str, ResourceProvider], ...]:
    providers = dict(providers or {})
    for key, provider in providers.items():
        if not isinstance(provider, ResourceProvider):
            raise DefinitionError(
                f"Feature view '{view}': resource '{key}' is {type(provider).__name__}, not a "
                f"resource provider; decorate its function with @resource_provider."
            )
    unknown = sorted(_resource_names_used(function) - providers.keys())
    if unknown:
        declared = ", ".join(sorted(providers)) or "none"
        raise DefinitionError(
            f"Feature view '{view}': the transform uses resource '{unknown[0]}' but "
            f"resource_providers declares {declared}; add it to resource_providers."
        )
    return tuple(sorted(providers.items()))


def batch_feature_view(
    *,
    mode: str,
    sources: Sequence[BatchSource | FilteredSource],
    entities: Sequence[Entity],
    features: Sequence[Attribute] | Sequence[Aggregate],
    feature_start_time: datetime | None = None,
    batch_schedule: timedelta | str | Schedule | None = None,
    aggregation_interval: timedelta | str | None = None,
    timestamp_field: str | None = None,
    name: str | None = None,
    resource_providers: Mapping[str, ResourceProvider] | None = None,
    environment: str | None = None,
    secrets: Mapping[str, SecretSpec] | None = None,
    offline: bool = True,
    online: bool = False,
    ttl: timedelta | str | None = None,
    micro_batch_size: int | None = None,
    concurrency: int | None = None,
    retry: RetryPolicy | None = None,
    on_error: str = "fail",
    timeout: float | timedelta | None = None,
    description: str | None = None,
    owner: str | None = None,
    tags: dict[str, str] | None = None,
    incremental_backfills: bool = False,
    prevent_destroy: bool = False,
    **unsupported: Any,
) -> Callable[[Callable[..., Any]], BatchFeatureView]:
    """Declare a batch feature view over one or more batch sources.

    Modes: `python` (a row dict in, a dict of features out; join keys and timestamp are
    carried over unless returned), `pandas`, `polars`, `pyarrow` (a micro-batch frame in,
    a frame out). The transform may be `async def`. It takes one parameter per source,
    matched by name when every parameter is a source's name, else in order. With
    `aggregation_interval`, `features` are Aggregates of the columns the transform returns
    (and `batch_schedule` defaults to the interval). `incremental_backfills` is accepted as
    Tecton has it; a backfill always computes interval by interval here, as it then does.
    `prevent_destroy` (Tecton's guard on `tecton apply`) is accepted and has no effect.

    Example:
        @batch_feature_view(mode="python", sources=[events], entities=[user],
                            features=[Attribute("n_words", Int64)],
                            batch_schedule=timedelta(days=1),
                            feature_start_time=datetime(2024, 10, 26))
        def n_words(row):
            return {"n_words": len(row["text"].split())}
    """

    def declare(function: Callable[..., Any]) -> BatchFeatureView:
        view = name or getattr(function, "__name__", "feature_view")
        if unsupported:
            raise DefinitionError(
                f"Feature view '{view}': unknown argument(s) {', '.join(sorted(unsupported))}."
            )
        _check_mode(view, mode, BATCH_MODES)
        if not isinstance(incremental_backfills, bool):
            raise DefinitionError(f"Feature view '{view}': incremental_backfills must be a bool.")
        if on_error not in ERROR_POLICIES:
            raise DefinitionError(
                f"Feature view '{view}' has on_error '{on_error}'; use one of "
                f"{', '.join(ERROR_POLICIES)}."
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise DefinitionError(
                f"Feature view '{view}': retry must be a RetryPolicy(...), "
                f"not {type(retry).__name__}."
            )
        read = _batch_sources(view, mode, sources)
        parameters = _match_parameters(view, function, read)
        if not entities or not all(isinstance(e, Entity) for e in entities):
            raise DefinitionError(f"Feature view '{view}' needs entities=[Entity(...), ...].")
        ts_field = timestamp_field or read[0].batch_config.timestamp_field
        if not ts_field:
            raise DefinitionError(
                f"Feature view '{view}' needs timestamp_field (or one on its source's config)."
            )
        keys = {k.name for e in entities for k in e.join_keys}
        durations: dict[str, Any] = {}
        parsers = (
            ("aggregation_interval", aggregation_interval, parse_duration),
            ("batch_schedule", batch_schedule or aggregation_interval, parse_schedule),
            ("ttl", ttl, parse_duration),
        )
        for setting, value, parse in parsers:
            try:
                durations[setting] = parse(value) if value is not None else None
            except ValueError as exc:
                raise DefinitionError(f"Feature view '{view}': {setting} {exc}.") from None
        schedule, ttl_value = durations["batch_schedule"], durations["ttl"]
        interval = durations["aggregation_interval"]
        if schedule is None:
            raise DefinitionError(f"Feature view '{view}' needs batch_schedule.")
        if not isinstance(feature_start_time, datetime):
            raise DefinitionError(
                f"Feature view '{view}' needs feature_start_time=datetime(...): where its "
                f"intervals begin (Tecton may leave it out; a Rivulet backfill tiles from it)."
            )
        if isinstance(schedule, Months) and as_utc(feature_start_time).day > 28:
            raise DefinitionError(
                f"Feature view '{view}': a monthly batch_schedule needs a feature_start_time on "
                f"day 1 to 28 of a month (every month has those), not day "
                f"{as_utc(feature_start_time).day} (in UTC)."
            )
        for setting, value in (
            ("micro_batch_size", micro_batch_size),
            ("concurrency", concurrency),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise DefinitionError(
                    f"Feature view '{view}': {setting} must be a positive integer, not {value!r}."
                )
        declared = _check_features(
            view,
            _aggregates(view, function, features, interval, schedule, feature_start_time),
            keys | {ts_field},
        )
        return BatchFeatureView(
            name=view,
            function=function,
            mode=mode,
            sources=read,
            parameters=parameters,
            entities=tuple(entities),
            timestamp_field=ts_field,
            features=declared,
            aggregation_interval=interval,
            batch_schedule=schedule,
            feature_start_time=as_utc(feature_start_time),
            resource_providers=_check_resources(view, function, resource_providers),
            secrets=check_secrets(f"Feature view '{view}'", secrets),
            environment=environment,
            offline=offline,
            online=online,
            ttl=ttl_value,
            micro_batch_size=micro_batch_size,
            concurrency=concurrency or DEFAULT_CONCURRENCY[mode],
            retry=retry,
            on_error=on_error,
            timeout=timeout_seconds(timeout, f"Feature view '{view}': timeout"),
            description=description,
            owner=owner,
            tags=tuple(sorted((tags or {}).items())),
        )

    return declare


def _batch_sources(view: str, mode: str, sources: Sequence[Any]) -> tuple[FilteredSource, ...]:
    """Each source as the range it is read over: a bare BatchSource is read for the interval."""
    if not sources or not all(isinstance(s, BatchSource | FilteredSource) for s in sources):
        raise DefinitionError(
            f"Feature view '{view}' needs sources=[BatchSource(...), ...] (each may be "
            f"source.unfiltered(), source.select_range(...) or FilteredSource(...))."
        )
    read = tuple(s if isinstance(s, FilteredSource) else FilteredSource(s) for s in sources)
    names = [source.name for source in read]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise DefinitionError(f"Feature view '{view}' reads source '{twice}' twice; read it once.")
    if mode == "python" and len(read) > 1:
        raise DefinitionError(
            f"Feature view '{view}' reads {len(read)} sources in python mode, which hands the "
            f"transform one row of one source; use pandas, polars or pyarrow mode to join them."
        )
    return read


def _match_parameters(
    view: str, function: Callable[..., Any], sources: Sequence[FilteredSource]
) -> tuple[str, ...]:
    """The transform's parameter for each source, in source order: by name when every
    parameter is a source's name, else by position; a parameter named after another
    position's source is a DefinitionError (it would be handed the wrong frame)."""
    params = [p for p in inspect.signature(function).parameters if p != "context"]
    names = [source.name for source in sources]
    if len(params) > len(sources):
        unmatched = [p for p in params if p not in names][len(sources) - len(params) :]
        raise DefinitionError(
            f"Feature view '{view}': the transform's parameter '{unmatched[0]}' matches no "
            f"source; its sources are {', '.join(names)}. Give it one parameter per source "
            f"(named after it, or in the order of `sources`), besides `context`."
        )
    _check_parameters(view, function, sources)
    if set(params) == set(names):
        return tuple(names)
    for position, param in enumerate(params):
        if param in names and names.index(param) != position:
            raise DefinitionError(
                f"Feature view '{view}': the transform's parameter '{param}' is the name of "
                f"source '{param}', but by position it would be handed source "
                f"'{names[position]}'; name every parameter after its source, or put the "
                f"parameters in the order of `sources`."
            )
    return tuple(params)


def _aggregates(
    view: str,
    function: Callable[..., Any],
    features: Sequence[Any],
    interval: timedelta | None,
    schedule: Schedule,
    start: datetime,
) -> Sequence[Any]:
    """The features, each Aggregate checked against the interval and named; a view mixing
    Aggregates with Attributes, or Aggregates without an interval, is a DefinitionError."""
    aggregates = [f for f in features if isinstance(f, Aggregate)]
    if not aggregates:
        if interval is not None:
            raise DefinitionError(
                f"Feature view '{view}' has an aggregation_interval but no Aggregate features."
            )
        return features
    if len(aggregates) < len(features):
        raise DefinitionError(
            f"Feature view '{view}' mixes Aggregate features with others; declare the "
            f"Attributes in a view of their own."
        )
    if interval is None or interval <= timedelta(0):
        raise DefinitionError(
            f"Feature view '{view}' declares Aggregate features, so it needs "
            f"aggregation_interval=timedelta(...) (the step its windows move by)."
        )
    if isinstance(schedule, Months) or schedule % interval:
        raise DefinitionError(
            f"Feature view '{view}': batch_schedule {schedule} is not a multiple of its "
            f"aggregation_interval {interval}."
        )
    since_epoch = as_utc(start) - datetime(1970, 1, 1, tzinfo=as_utc(start).tzinfo)
    if since_epoch % interval:
        raise DefinitionError(
            f"Feature view '{view}': feature_start_time {as_utc(start):%Y-%m-%d %H:%M} UTC is "
            f"not on a boundary of its aggregation_interval {interval} (they tile time from "
            f"1970-01-01 00:00 UTC)."
        )
    bound = []
    for aggregate in aggregates:
        try:
            bound.append(aggregate.bound(interval))
        except DefinitionError as exc:
            raise DefinitionError(f"Feature view '{view}': {exc.message}") from None
    types: dict[str, DataType] = {}
    for aggregate in bound:
        column, dtype = aggregate.column, aggregate.input_column.dtype
        if types.setdefault(column, dtype) != dtype:
            raise DefinitionError(
                f"Feature view '{view}': column '{column}' is aggregated as both "
                f"{types[column]!r} and {dtype!r}; give it one type."
            )
        if not may_name(function, column, dynamic=True):
            raise DefinitionError(
                f"Feature view '{view}': Aggregate '{aggregate.name}' is over column "
                f"'{column}', which the transform does not return (its code never names it); "
                f"return '{column}' from the transform, or aggregate a column it returns."
            )
    return bound


def may_name(function: Callable[..., Any], column: str, *, dynamic: bool = False) -> bool:
    """Whether the function's body names `column`, as a string or a keyword: the only ways
    its output can hold a column its input lacks (`{"key": ...}` in python mode,
    `.alias("key")` or `with_columns(key=...)` in frame modes). With `dynamic`, also when it
    builds names (f-strings) or returns a parameter as it is (then the column may come from
    a source). True when its code cannot be read, since then nothing is known."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return True
    functions = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
    definition = next((node for node in ast.walk(tree) if isinstance(node, functions)), None)
    if definition is None:
        return True
    params = {arg.arg for arg in definition.args.args}
    body = definition.body if isinstance(definition.body, list) else [definition.body]
    nodes = [node for statement in body for node in ast.walk(statement)]
    named = any(
        (isinstance(node, ast.Constant) and node.value == column)
        or (isinstance(node, ast.keyword) and node.arg == column)
        for node in nodes
    )
    if named or not dynamic:
        return named
    return any(
        isinstance(node, ast.JoinedStr)
        or (isinstance(node, ast.Attribute) and node.attr == column)
        or (
            isinstance(node, ast.Return)
            and isinstance(node.value, ast.Name)
            and node.value.id in params
        )
        for node in nodes
    )


def realtime_feature_view(
    *,
    sources: Sequence[RequestSource | BatchFeatureView],
    mode: str,
    features: Sequence[Attribute],
    name: str | None = None,
    resource_providers: Mapping[str, ResourceProvider] | None = None,
    secrets: Mapping[str, SecretSpec] | None = None,
    environment: str | None = None,
    timeout: float | timedelta | None = None,
    on_error: str = "fail",
    cache: Cache | None = None,
    concurrency: int = REALTIME_CONCURRENCY,
    retry: RetryPolicy | None = None,
    description: str | None = None,
    owner: str | None = None,
    tags: dict[str, str] | None = None,
    **unsupported: Any,
) -> Callable[[Callable[..., Any]], RealtimeFeatureView]:
    """Declare a realtime feature view over request fields, served by `rivulet serve`.

    Example:
        @realtime_feature_view(sources=[RequestSource(schema=[Field("text", String)])],
                               mode="python", features=[Attribute("n_words", Int64)])
        def n_words(request):
            return {"n_words": len(request["text"].split())}
    """

    def declare(function: Callable[..., Any]) -> RealtimeFeatureView:
        view = name or getattr(function, "__name__", "feature_view")
        if unsupported:
            raise DefinitionError(
                f"Feature view '{view}': unknown argument(s) {', '.join(sorted(unsupported))}."
            )
        _check_mode(view, mode, REALTIME_MODES)
        if any(isinstance(feature, Aggregate) for feature in features):
            raise DefinitionError(
                f"Feature view '{view}': a realtime view computes Attributes; declare "
                f"Aggregates in a batch view with an aggregation_interval."
            )
        _check_realtime_sources(view, sources)
        _check_parameters(view, function, sources)
        if on_error not in REALTIME_ERROR_POLICIES:
            raise DefinitionError(
                f"Feature view '{view}' has on_error '{on_error}'; a realtime view uses one of "
                f"{', '.join(REALTIME_ERROR_POLICIES)}."
            )
        if cache is not None and not isinstance(cache, Cache):
            raise DefinitionError(f"Feature view '{view}': cache must be a Cache(ttl=...).")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise DefinitionError(f"Feature view '{view}': retry must be a RetryPolicy(...).")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise DefinitionError(
                f"Feature view '{view}': concurrency must be a positive integer, "
                f"not {concurrency!r}."
            )
        return RealtimeFeatureView(
            name=view,
            function=function,
            mode=mode,
            sources=tuple(sources),
            features=_check_features(view, features, set()),
            resource_providers=_check_resources(view, function, resource_providers),
            secrets=check_secrets(f"Feature view '{view}'", secrets),
            environment=environment,
            timeout=timeout_seconds(timeout, f"Feature view '{view}': timeout"),
            on_error=on_error,
            cache=cache,
            concurrency=concurrency,
            retry=retry,
            description=description,
            owner=owner,
            tags=tuple(sorted((tags or {}).items())),
        )

    return declare
