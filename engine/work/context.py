"""The `context` handed to transforms and resource providers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.define.resources import SecretSpec
from engine.define.secrets import Secret
from engine.errors import ResourceError, SecretError


class Secrets(Mapping[str, str]):
    """Secret values by the names their owner declared; never shown by repr."""

    def __init__(
        self, owner: str, specs: tuple[tuple[str, SecretSpec], ...], values: Mapping[Secret, str]
    ) -> None:
        self._owner = owner
        self._values = {
            name: spec if isinstance(spec, str) else values[spec] for name, spec in specs
        }

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            raise SecretError(
                f"{self._owner} reads secret '{name}' but declares only "
                f"{', '.join(self._values) or 'none'}; add it to secrets={{...}}."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({', '.join(f'{k}=***' for k in self._values)})"


class Resources(Mapping[str, Any]):
    """Built resources by the names a feature view gave them in `resource_providers`."""

    def __init__(self, view: str, resources: dict[str, Any]) -> None:
        self._view = view
        self._resources = resources

    def __getitem__(self, name: str) -> Any:
        try:
            return self._resources[name]
        except KeyError:
            raise ResourceError(
                f"Feature view '{self._view}' uses resource '{name}' but declares only "
                f"{', '.join(self._resources) or 'none'}; add it to resource_providers."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._resources)

    def __len__(self) -> int:
        return len(self._resources)


@dataclass(frozen=True)
class Context:
    """What a transform sees besides its rows: resources, secrets and the interval."""

    resources: Resources
    secrets: Secrets
    start_time: datetime
    end_time: datetime
    batch_schedule: timedelta


@dataclass(frozen=True)
class ProviderContext:
    """What a resource provider sees: its own secrets."""

    secrets: Secrets
