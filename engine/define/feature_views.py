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

from engine.define.fields import Attribute, Entity, Field
from engine.define.policies import RetryPolicy, timeout_seconds
from engine.define.resources import ResourceProvider, SecretSpec, check_secrets
from engine.define.schedule import Months, Schedule, as_utc, parse_duration, parse_schedule
from engine.define.sources import BatchSource, PythonConfig, RequestSource
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
    """A declared batch feature view: its transform, source, keys, features and schedule.

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
    sources: tuple[BatchSource, ...]
    entities: tuple[Entity, ...]
    timestamp_field: str
    features: tuple[Attribute, ...]
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
        return self.sources[0]

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
        return frozenset(f.name for f in self.features)

    @property
    def window_field(self) -> str:
        """The source column the interval window filters on."""
        return self.source.batch_config.timestamp_field or self.timestamp_field

    @property
    def data_delay(self) -> timedelta:
        """How long after an interval ends its source data is complete."""
        return self.source.batch_config.data_delay

    def output_schema(self) -> pa.Schema:
        """Join keys, the timestamp, then the features, with their declared Arrow types."""
        import pyarrow as pa

        columns = [(k.name, k.dtype) for k in self.join_keys]
        columns += [(self.timestamp_field, Timestamp)]
        columns += [(f.name, f.dtype) for f in self.features]
        return pa.schema([pa.field(name, dtype.to_arrow()) for name, dtype in columns])

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of everything that decides the output; a change marks old output stale."""
        config = self.source.batch_config
        parts = {
            "mode": self.mode,
            "on_error": self.on_error,
            "source": _source_text(config.loader)
            if isinstance(config, PythonConfig)
            else repr(config),
            "keys": repr(self.join_keys),
            "timestamp_field": self.timestamp_field,
            "features": repr(tuple((f.name, f.dtype) for f in self.features)),
            "batch_schedule": str(self.batch_schedule),
            "feature_start_time": self.feature_start_time.isoformat(),
            "transform": _source_text(self.function),
            # Only what decides the output: rate limits, retries, concurrency and thread
            # safety change how calls are made, not what they return.
            "resources": repr(
                tuple((k, p.name, _source_text(p.function)) for k, p in self.resource_providers)
            ),
        }
        blob = json.dumps(parts, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


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
            f"give it one positional parameter per source, in order."
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


def _check_features(view: str, features: Sequence[Any], taken: set[str]) -> tuple[Attribute, ...]:
    if not features:
        raise DefinitionError(f"Feature view '{view}' declares no features.")
    seen = set(taken)
    for feature in features:
        if not isinstance(feature, Attribute):
            raise DefinitionError(
                f"Feature view '{view}': features must be Attribute(name, dtype), not {feature!r}."
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
    sources: Sequence[BatchSource],
    entities: Sequence[Entity],
    features: Sequence[Attribute],
    batch_schedule: timedelta | str | Schedule,
    feature_start_time: datetime,
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
    **unsupported: Any,
) -> Callable[[Callable[..., Any]], BatchFeatureView]:
    """Declare a batch feature view over one batch source.

    Modes: `python` (a row dict in, a dict of features out; join keys and timestamp are
    carried over unless returned), `pandas`, `polars`, `pyarrow` (a micro-batch frame in,
    a frame out). The transform may be `async def`.

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
        if len(sources) != 1 or not isinstance(sources[0], BatchSource):
            raise DefinitionError(
                f"Feature view '{view}' needs exactly one BatchSource in `sources`; "
                f"to combine tables, join them in a DuckDBConfig query."
            )
        _check_parameters(view, function, sources)
        if not entities or not all(isinstance(e, Entity) for e in entities):
            raise DefinitionError(f"Feature view '{view}' needs entities=[Entity(...), ...].")
        ts_field = timestamp_field or sources[0].batch_config.timestamp_field
        if not ts_field:
            raise DefinitionError(
                f"Feature view '{view}' needs timestamp_field (or one on its source's config)."
            )
        keys = {k.name for e in entities for k in e.join_keys}
        durations: dict[str, Any] = {}
        parsers = (("batch_schedule", batch_schedule, parse_schedule), ("ttl", ttl, parse_duration))
        for setting, value, parse in parsers:
            try:
                durations[setting] = parse(value) if value is not None else None
            except ValueError as exc:
                raise DefinitionError(f"Feature view '{view}': {setting} {exc}.") from None
        schedule, ttl_value = durations["batch_schedule"], durations["ttl"]
        if not isinstance(feature_start_time, datetime):
            raise DefinitionError(f"Feature view '{view}' needs feature_start_time as a datetime.")
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
        return BatchFeatureView(
            name=view,
            function=function,
            mode=mode,
            sources=tuple(sources),
            entities=tuple(entities),
            timestamp_field=ts_field,
            features=_check_features(view, features, keys | {ts_field}),
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
