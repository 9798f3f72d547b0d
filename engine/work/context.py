"""The `context` handed to transforms and resource providers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.define.resources import SecretSpec
from engine.define.secrets import Secret
from engine.errors import ResourceError, SecretError


class _Declared(Mapping[str, Any]):
    """Values by the names their owner declared; looking up an undeclared name says so."""

    _what = "value"

    def __init__(self, owner: str, values: dict[str, Any]) -> None:
        self._owner = owner
        self._values = values

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise self._undeclared(
                f"{self._owner} uses {self._what} '{name}' but declares only "
                f"{', '.join(self._values) or 'none'}."
            ) from None

    def _undeclared(self, message: str) -> Exception:
        raise NotImplementedError

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class Secrets(_Declared):
    """Secret values by the names their owner declared in `secrets=`; never shown by repr."""

    _what = "secret"

    def __init__(
        self, owner: str, specs: tuple[tuple[str, SecretSpec], ...], values: Mapping[Secret, str]
    ) -> None:
        super().__init__(
            owner, {name: spec if isinstance(spec, str) else values[spec] for name, spec in specs}
        )

    def _undeclared(self, message: str) -> Exception:
        return SecretError(message + " Add it to secrets={...}.")

    def __repr__(self) -> str:
        return f"Secrets({', '.join(f'{k}=***' for k in self._values)})"


class Resources(_Declared):
    """Built resources by the names a feature view gave them in `resource_providers=`."""

    _what = "resource"

    def _undeclared(self, message: str) -> Exception:
        return ResourceError(message + " Add it to resource_providers={...}.")


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
