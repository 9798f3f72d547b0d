"""Environments: the packages a feature view needs where it runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Environment:
    """Named requirements checked before a run, e.g. `Environment("openai_env", ["openai>=1"])`.

    A feature view names it with `environment="openai_env"`.
    """

    name: str
    requirements: tuple[str, ...]
    description: str | None = None

    def __init__(
        self, name: str, requirements: Sequence[str] = (), description: str | None = None
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "requirements", tuple(requirements))
        object.__setattr__(self, "description", description)
