"""Entities, their join keys, and the features a view declares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.define.types import DataType


@dataclass(frozen=True)
class Field:
    """A named, typed column: a join key of an entity or a request field."""

    name: str
    dtype: DataType


@dataclass(frozen=True)
class Attribute:
    """A feature computed by a transform, e.g. `Attribute("embedding", Array(Float32))`."""

    name: str
    dtype: DataType
    description: str | None = None


@dataclass(frozen=True)
class Entity:
    """A business object features describe, identified by its join keys.

    Example: `Entity(name="user", join_keys=[Field("user_id", String)])`.
    """

    name: str
    join_keys: tuple[Field, ...]
    description: str | None = None
    owner: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        name: str,
        join_keys: Sequence[Field | str],
        description: str | None = None,
        owner: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        from engine.define.types import String
        from engine.errors import DefinitionError

        keys = tuple(Field(k, String) if isinstance(k, str) else k for k in join_keys)
        if not keys or not all(isinstance(k, Field) for k in keys):
            raise DefinitionError(
                f"Entity '{name}' needs join_keys as a non-empty list of Field(name, dtype)."
            )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "join_keys", keys)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "tags", tuple(sorted((tags or {}).items())))
