"""Import a job file by path and collect the definitions it declares."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.define.environment import Environment
from engine.define.feature_views import BatchFeatureView, RealtimeFeatureView
from engine.define.services import FeatureService
from engine.errors import DefinitionError, JobLoadError, RivuletError, SettingsError, one_line


@dataclass(frozen=True)
class Job:
    """The definitions of one job file, by name, in declaration order."""

    path: Path
    feature_views: dict[str, BatchFeatureView]
    realtime_views: dict[str, RealtimeFeatureView]
    environments: dict[str, Environment]
    services: dict[str, FeatureService] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    def servable(self) -> dict[str, tuple[RealtimeFeatureView, ...]]:
        """What a request may name: each feature service, and each realtime view by its own
        name (a service of that name wins)."""
        served = {name: (view,) for name, view in self.realtime_views.items()}
        served.update({name: service.features for name, service in self.services.items()})
        return served

    def select(self, names: Sequence[str] = ()) -> list[BatchFeatureView]:
        """The named batch feature views (all when none are named), or a SettingsError."""
        for name in names:
            if name not in self.feature_views:
                raise SettingsError(
                    f"Job '{self.name}' has no batch feature view '{name}'; "
                    f"it declares: {', '.join(self.feature_views) or 'none'}."
                )
        return [v for n, v in self.feature_views.items() if not names or n in names]

    def materialized(self, names: Sequence[str] = ()) -> tuple[list[BatchFeatureView], list[str]]:
        """The named views (all when none are named) that materialize offline, and notes on
        those that do not (`offline=False`). Online views publish from their offline files,
        so one with offline=False is left out too."""
        views, notes = [], []
        for view in self.select(names):
            if view.offline:
                views.append(view)
            elif view.online:
                notes.append(
                    f"Feature view '{view.name}' has offline=False and is left out: Rivulet "
                    f"publishes an online view's rows from its committed offline files, so "
                    f"online=True needs offline=True."
                )
            else:
                notes.append(f"Feature view '{view.name}' has offline=False and is left out.")
        return views, notes


def load_job(path: str | Path) -> Job:
    """Import the job file at `path` (its folder goes on sys.path) and collect its definitions.

    The file is executed anew at each call, as a new process would: a run in a long-lived
    process (a notebook, a test session) sees the job as it is now, edits and environment
    included, not as it was first imported.

    Raises JobLoadError when the file is missing, raises on import or declares no feature view;
    a DefinitionError raised while declaring is re-raised with the job named.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise JobLoadError(f"Job file '{path}' does not exist.")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    module_name = f"rivulet_job_{path.stem}_{digest}"
    module = _import(path, module_name)
    views: dict[str, BatchFeatureView] = {}
    realtime: dict[str, RealtimeFeatureView] = {}
    environments: dict[str, Environment] = {}
    services: dict[str, FeatureService] = {}
    for value in vars(module).values():
        if isinstance(value, BatchFeatureView):
            _collect(views, value, path)
        elif isinstance(value, RealtimeFeatureView):
            _collect(realtime, value, path)
        elif isinstance(value, Environment):
            _collect(environments, value, path)
        elif isinstance(value, FeatureService):
            _collect(services, value, path)
    for service in services.values():
        for view in service.features:
            _collect(views if isinstance(view, BatchFeatureView) else realtime, view, path)
    if not views and not realtime:
        raise JobLoadError(f"Job '{path.stem}' ({path}) declares no feature views.")
    return Job(path, views, realtime, environments, services)


def _collect(found: dict, value: Any, path: Path) -> None:
    if found.get(value.name, value) is not value:
        raise DefinitionError(
            f"Job '{path.stem}' declares two {type(value).__name__}s named '{value.name}'."
        )
    found[value.name] = value


def _import(path: Path, module_name: str) -> object:
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except RivuletError as exc:
        del sys.modules[module_name]
        raise type(exc)(f"In job '{path.stem}': {exc.message}") from exc
    except BaseException as exc:
        del sys.modules[module_name]
        if isinstance(exc, KeyboardInterrupt):
            raise
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        where = f" at line {frames[-1].lineno}" if frames else ""
        raise JobLoadError(
            f"Job '{path.stem}' ({path}) could not be imported: {type(exc).__name__}{where}: "
            f"{one_line(exc)}. Run it with `python {path}` to see the full traceback, or pass "
            f"--debug."
        ) from exc
    return module
