"""`FeatureService`: the views a request is answered with, under one name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.define.feature_views import BatchFeatureView, RealtimeFeatureView
from engine.errors import DefinitionError


@dataclass(frozen=True, eq=False)
class FeatureService:
    """A named group of feature views answered together by `get-features`: realtime views,
    and batch views declared online=True (read from the online store by join keys).

    Example: `FeatureService(name="fraud", features=[user_metrics, fraud_score])`.
    """

    name: str
    features: tuple[RealtimeFeatureView | BatchFeatureView, ...]
    description: str | None = None
    owner: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        name: str,
        features: Sequence[RealtimeFeatureView | BatchFeatureView],
        description: str | None = None,
        owner: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise DefinitionError("FeatureService needs a name.")
        if not features:
            raise DefinitionError(f"Feature service '{name}' lists no features.")
        for view in features:
            if isinstance(view, BatchFeatureView) and not view.online:
                raise DefinitionError(
                    f"Feature service '{name}' lists batch feature view '{view.name}', which "
                    f"is not online=True; declare it online=True so serving can read it."
                )
            if not isinstance(view, RealtimeFeatureView | BatchFeatureView):
                raise DefinitionError(
                    f"Feature service '{name}' lists {view!r}; list feature views."
                )
        names = [view.name for view in features]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DefinitionError(f"Feature service '{name}' lists view '{twice[0]}' twice.")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "features", tuple(features))
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "tags", tuple(sorted((tags or {}).items())))
