"""`FeatureService`: the views a realtime request is answered with, under one name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.define.feature_views import BatchFeatureView, RealtimeFeatureView
from engine.errors import DefinitionError


@dataclass(frozen=True, eq=False)
class FeatureService:
    """A named group of realtime feature views, answered together by `get-features`.

    Example: `FeatureService(name="fraud", features=[fraud_score, embedding])`.
    """

    name: str
    features: tuple[RealtimeFeatureView, ...]
    description: str | None = None
    owner: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        name: str,
        features: Sequence[RealtimeFeatureView],
        description: str | None = None,
        owner: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise DefinitionError("FeatureService needs a name.")
        if not features:
            raise DefinitionError(f"Feature service '{name}' lists no features.")
        for view in features:
            if isinstance(view, BatchFeatureView):
                raise DefinitionError(
                    f"Feature service '{name}' lists batch feature view '{view.name}'; Rivulet "
                    f"serves realtime feature views only (batch views are served once the "
                    f"online store exists)."
                )
            if not isinstance(view, RealtimeFeatureView):
                raise DefinitionError(
                    f"Feature service '{name}' lists {view!r}; list @realtime_feature_view "
                    f"functions."
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
