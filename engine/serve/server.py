"""`FeatureServer`: a job's realtime views answering requests in this process.

It owns the resources: `with FeatureServer(job) as server:` builds every one before the
first request (init retried) on a loop thread of its own, `async with` on the running loop
(the HTTP app does that); leaving it tears each down once.

Example:
    with FeatureServer("jobs/embeddings.py") as server:
        vector = server.get_features("realtime_embedding", request_context={"input": "hi"})
        vector.to_dict()  # {"realtime_embedding.embedding": [0.12, ...]}
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.define.feature_views import BatchFeatureView, RealtimeFeatureView
from engine.define.sources import RequestSource
from engine.define.types import DataType
from engine.errors import BadRequest, Interrupted, RivuletError, SettingsError, ViewTimeout
from engine.online.rows import Found, read_features
from engine.online.stores import OnlineStore, open_store
from engine.plan.job import Job, load_job
from engine.plan.rates import worker_rates
from engine.plan.secrets import resolve_secrets
from engine.runtime.context import running_loop
from engine.serve.transform import Runtime, checked_field, request_fields

log = logging.getLogger("rivulet")
PRESENT, ERROR, TIMEOUT = "PRESENT", "ERROR", "TIMEOUT"
View = RealtimeFeatureView | BatchFeatureView


@dataclass(frozen=True)
class Feature:
    """One feature of an answer: `view.feature`, its value, declared type and status
    (a batch view's: PRESENT, MISSING or EXPIRED), and a batch view's row timestamp."""

    name: str
    value: Any
    dtype: DataType
    status: str
    effective_time: datetime | None = None


@dataclass(frozen=True)
class FeatureVector:
    """The features a service answered, in the order of its views and their features."""

    features: list[Feature]

    def to_dict(self) -> dict[str, Any]:
        return {feature.name: feature.value for feature in self.features}


class FeatureServer:
    """Serves a job's realtime views and feature services; see the module docstring.

    `processes` is how many server processes share the declared rate limits (each keeps to
    its share); `rates` overrides a provider's requests per second, by provider name. With
    `limiter` (redis://HOST:PORT/DB) every process of every server and run takes from one
    bucket per provider instead, as `--limiter` does for batch runs. Online batch views
    are read from `online_store` (redis://HOST:PORT/DB), by default the SQLite file of the
    offline store at `output`.
    """

    def __init__(
        self,
        job: Job | str | Path,
        *,
        secrets_file: str | Path | None = None,
        processes: int = 1,
        rates: Mapping[str, float] | None = None,
        limiter: str | None = None,
        online_store: str | None = None,
        output: str | Path = "offline_store",
    ) -> None:
        self.job = job if isinstance(job, Job) else load_job(job)
        self.views = list(self.job.realtime_views.values())
        self.servable = self.job.servable()
        if not self.servable:
            raise SettingsError(
                f"Job '{self.job.name}' declares no realtime feature views or feature services."
            )
        online = [v for views in self.servable.values() for v in _batch_views(views)]
        self._store: OnlineStore | None = (
            open_store(online_store, output, serving=True) if online else None
        )
        self._secret_values = resolve_secrets(self.views, secrets_file)
        self._rates = worker_rates(self.views, rates or {}, 1 if limiter else processes)
        self.runtime = Runtime(self.views, self._secret_values, self._rates, limiter=limiter)
        self.ready = False
        self.failure: RivuletError | None = None
        self._built: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def building(self) -> asyncio.Task:
        """Start building every resource on the running loop, in the background; requests
        wait for it. A build that fails for good is kept as `failure`."""
        self._loop = asyncio.get_running_loop()
        self._built = asyncio.Event()
        return asyncio.create_task(self._build(self._built))

    async def start(self) -> None:
        """Build every resource on the running loop; raises ResourceError when one cannot
        be built."""
        await self.building()
        if self.failure is not None:
            raise self.failure

    async def _build(self, built: asyncio.Event) -> None:
        try:
            await self.runtime.start()
            self.ready = True
        except RivuletError as error:
            self.failure = error
        finally:
            built.set()

    async def close(self) -> None:
        """Tear every resource down, once."""
        self.ready = False
        await self.runtime.close()
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> FeatureServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> FeatureServer:
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="rivulet-serve", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result()
        except BaseException:
            self._stop_thread(loop)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self.close(), self._loop).result()
        self._stop_thread(self._loop)

    def metadata(self, service: str) -> list[tuple[str, DataType]]:
        """Each feature the service answers, as (`view.feature`, type), in answer order."""
        return [
            (f"{view.name}.{feature.name}", feature.dtype)
            for view in self._views(service)
            for feature in view.features
        ]

    def join_keys(self, service: str) -> dict[str, DataType]:
        """The join keys a request of the service must give (for its online batch views)."""
        views = _batch_views(self._views(service))
        return {key.name: key.dtype for view in views for key in view.join_keys}

    def get_features(
        self,
        service: str,
        request_context: Mapping[str, Any] | None = None,
        join_keys: Mapping[str, Any] | None = None,
        allow_partial_results: bool = False,
    ) -> FeatureVector:
        """The service's features for one request (from sync code); see `aget_features`."""
        if self._loop is None:
            raise SettingsError("FeatureServer.get_features() needs `with FeatureServer(...)`.")
        if running_loop() is self._loop:
            raise SettingsError(
                "FeatureServer.get_features() was called on the server's own event loop; "
                "use `await server.aget_features(...)` there."
            )
        views = self._views(service)
        calls = [self.runtime.calls[v.name] for v in views if isinstance(v, RealtimeFeatureView)]
        if self.ready and all(call.runs_here for call in calls):  # no hop to the loop
            found, fields = self._inputs(views, request_context or {}, join_keys or {})
            computed = {
                call.view.name: self._features(
                    call.view, _attempted(call.answer_here, fields[call.view.name]),
                    allow_partial_results,
                )
                for call in calls
            }  # fmt: skip
            return _assembled(views, found, computed)
        answer = self.aget_features(service, request_context, join_keys, allow_partial_results)
        return asyncio.run_coroutine_threadsafe(answer, self._loop).result()

    async def aget_features(
        self,
        service: str,
        request_context: Mapping[str, Any] | None = None,
        join_keys: Mapping[str, Any] | None = None,
        allow_partial_results: bool = False,
    ) -> FeatureVector:
        """The service's features for one request.

        Raises BadRequest for an unknown service or a missing or mistyped field; a view
        that fails or passes its timeout raises its error, unless partial results are
        allowed or the view's `on_error` is "null": then its features are null with status
        ERROR or TIMEOUT. `join_keys` give the entities whose online batch features the
        service answers or its realtime views read (a missing key is a BadRequest).
        """
        if self._loop is not None and asyncio.get_running_loop() is not self._loop:
            answer = self.aget_features(service, request_context, join_keys, allow_partial_results)
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(answer, self._loop))
        views = self._views(service)
        found, fields = self._inputs(views, request_context or {}, join_keys or {})
        realtime = [view for view in views if isinstance(view, RealtimeFeatureView)]
        await self._until_built()
        if len(realtime) == 1:
            answers = [
                await self._answer(realtime[0], fields[realtime[0].name], allow_partial_results)
            ]
        else:
            answers = await asyncio.gather(
                *(self._answer(v, fields[v.name], allow_partial_results) for v in realtime)
            )
        computed = {view.name: answer for view, answer in zip(realtime, answers, strict=True)}
        return _assembled(views, found, computed)

    def _inputs(
        self, views: Sequence[View], context: Mapping[str, Any], join_keys: Mapping[str, Any]
    ) -> tuple[dict[str, Found], dict[str, list[dict[str, Any]]]]:
        """The online features of the batch views the request needs, and each realtime
        view's fields by source (the request's, or a batch source's features)."""
        found = self._online(views, join_keys)
        fields = {
            view.name: request_fields(
                view,
                [
                    context if isinstance(source, RequestSource) else found[source.name].values
                    for source in view.sources
                ],
            )
            for view in views
            if isinstance(view, RealtimeFeatureView)
        }
        return found, fields

    def _online(self, views: Sequence[View], join_keys: Mapping[str, Any]) -> dict[str, Found]:
        """The online features of every batch view the request needs, by view name, read in
        one round trip."""
        wanted = {view.name: view for view in _batch_views(views)}
        if not wanted:
            return {}
        store = self._store  # close() may clear it meanwhile
        if store is None:
            raise Interrupted("The server is shutting down.")
        keys = [(view, _key_values(view, join_keys)) for view in wanted.values()]
        found = read_features(store, self.job.name, keys, datetime.now(UTC))
        return dict(zip(wanted, found, strict=True))

    async def _answer(
        self, view: RealtimeFeatureView, fields: list[dict[str, Any]], partial: bool
    ) -> list[Feature]:
        try:
            values: dict[str, Any] | RivuletError = await self.runtime.calls[view.name].answer(
                fields
            )
        except RivuletError as error:
            values = error
        return self._features(view, values, partial)

    def _features(
        self, view: RealtimeFeatureView, values: dict[str, Any] | RivuletError, partial: bool
    ) -> list[Feature]:
        """The view's features; for an error, null features with status ERROR or TIMEOUT
        when partial results are allowed or the view's `on_error` is "null", else raised."""
        if isinstance(values, RivuletError):
            if not (partial or view.on_error == "null"):
                raise values
            log.warning("%s", self.runtime.redact(str(values)))
            status = TIMEOUT if isinstance(values, ViewTimeout) else ERROR
            return [Feature(f"{view.name}.{f.name}", None, f.dtype, status) for f in view.features]
        return [
            Feature(f"{view.name}.{f.name}", values[f.name], f.dtype, PRESENT)
            for f in view.features
        ]

    def _views(self, service: str) -> tuple[View, ...]:
        try:
            return self.servable[service]
        except KeyError:
            raise BadRequest(
                f"Job '{self.job.name}' has no feature service or realtime feature view "
                f"'{service}'; it serves {', '.join(sorted(self.servable))}.",
                status=404,
            ) from None

    async def _until_built(self) -> None:
        """Wait for the start-up build; a build that failed fails the request with its error."""
        if self._built is None:
            raise SettingsError("FeatureServer was not started; use `with FeatureServer(...)`.")
        await self._built.wait()
        if self.failure is not None:
            raise self.failure

    def _stop_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join()
        loop.close()
        self._loop = self._thread = None


def _batch_views(views: Sequence[View]) -> list[BatchFeatureView]:
    """The online batch views among `views` and the sources of its realtime views, once each."""
    found: dict[str, BatchFeatureView] = {}
    for view in views:
        sources = view.batch_sources if isinstance(view, RealtimeFeatureView) else (view,)
        found.update((source.name, source) for source in sources)
    return list(found.values())


def _key_values(view: BatchFeatureView, join_keys: Mapping[str, Any]) -> list[Any]:
    """The request's values of the view's join keys, typed (a BadRequest names a missing or
    mistyped one)."""
    return [checked_field(view.name, key, join_keys, key=True) for key in view.join_keys]


def _stored(view: BatchFeatureView, found: Found) -> list[Feature]:
    return [
        Feature(
            f"{view.name}.{f.name}", found.values[f.name], f.dtype, found.status, found.timestamp
        )
        for f in view.features
    ]


def _assembled(
    views: Sequence[View], found: dict[str, Found], computed: dict[str, list[Feature]]
) -> FeatureVector:
    """The answer, in the order of the service's views and their features."""
    return FeatureVector(
        [
            feature
            for view in views
            for feature in (
                computed[view.name]
                if isinstance(view, RealtimeFeatureView)
                else _stored(view, found[view.name])
            )
        ]
    )


def _attempted(
    answer: Callable[[list[dict[str, Any]]], dict[str, Any]], fields: list[dict[str, Any]]
) -> dict[str, Any] | RivuletError:
    try:
        return answer(fields)
    except RivuletError as error:
        return error
