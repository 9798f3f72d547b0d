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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.define.feature_views import RealtimeFeatureView
from engine.define.types import DataType
from engine.errors import BadRequest, RivuletError, SettingsError, ViewTimeout
from engine.plan.job import Job, load_job
from engine.plan.rates import worker_rates
from engine.plan.secrets import resolve_secrets
from engine.runtime.context import running_loop
from engine.serve.transform import Runtime, request_fields

log = logging.getLogger("rivulet")
PRESENT, ERROR, TIMEOUT = "PRESENT", "ERROR", "TIMEOUT"


@dataclass(frozen=True)
class Feature:
    """One feature of an answer: `view.feature`, its value, declared type and status."""

    name: str
    value: Any
    dtype: DataType
    status: str


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
    bucket per provider instead, as `--limiter` does for batch runs.
    """

    def __init__(
        self,
        job: Job | str | Path,
        *,
        secrets_file: str | Path | None = None,
        processes: int = 1,
        rates: Mapping[str, float] | None = None,
        limiter: str | None = None,
    ) -> None:
        self.job = job if isinstance(job, Job) else load_job(job)
        self.views = list(self.job.realtime_views.values())
        if not self.views:
            raise SettingsError(f"Job '{self.job.name}' declares no realtime feature views.")
        self.servable = self.job.servable()
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
        ERROR or TIMEOUT. `join_keys` is accepted for Tecton's API; realtime views read the
        request only.
        """
        if self._loop is not None and asyncio.get_running_loop() is not self._loop:
            answer = self.aget_features(service, request_context, join_keys, allow_partial_results)
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(answer, self._loop))
        views = self._views(service)
        context = request_context or {}
        fields = [request_fields(view, [context] * len(view.sources)) for view in views]
        await self._until_built()
        if len(views) == 1:
            answers = [await self._answer(views[0], fields[0], allow_partial_results)]
        else:
            answers = await asyncio.gather(
                *(
                    self._answer(v, f, allow_partial_results)
                    for v, f in zip(views, fields, strict=True)
                )
            )
        return FeatureVector([feature for answer in answers for feature in answer])

    async def _answer(
        self, view: RealtimeFeatureView, fields: list[dict[str, Any]], partial: bool
    ) -> list[Feature]:
        try:
            values = await self.runtime.calls[view.name].answer(fields)
        except RivuletError as error:
            if not (partial or view.on_error == "null"):
                raise
            log.warning("%s", self.runtime.redact(str(error)))
            status = TIMEOUT if isinstance(error, ViewTimeout) else ERROR
            return [Feature(f"{view.name}.{f.name}", None, f.dtype, status) for f in view.features]
        return [
            Feature(f"{view.name}.{f.name}", values[f.name], f.dtype, PRESENT)
            for f in view.features
        ]

    def _views(self, service: str) -> tuple[RealtimeFeatureView, ...]:
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
