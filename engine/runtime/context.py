"""The `context` handed to transforms and resource providers."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.define.resources import ResourceProvider, SecretSpec
from engine.define.secrets import Secret
from engine.errors import ResourceError, TransformError

T = TypeVar("T")


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
        return self[name] if name in self._values else default

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
        return TransformError(message + " Add it to secrets={...}.")

    def __repr__(self) -> str:
        return f"Secrets({', '.join(f'{k}=***' for k in self._values)})"


class Resources(_Declared):
    """Resources by the names a feature view gave them in `resource_providers=`.

    Each lookup asks the worker's pool, so a call always gets the current instance (a
    repaired one after a breakage, this thread's own for a per-thread provider).
    """

    _what = "resource"

    def __init__(self, owner: str, providers: dict[str, ResourceProvider], pool: Any) -> None:
        super().__init__(owner, providers)
        self._pool = pool

    def __getitem__(self, name: str) -> Any:
        return self._pool.get(super().__getitem__(name))

    def provider(self, name: str) -> ResourceProvider:
        return super().__getitem__(name)

    def _undeclared(self, message: str) -> Exception:
        return ResourceError(message + " Add it to resource_providers={...}.")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, or None (sync code on a plain thread)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from sync code, even where a loop already runs (Jupyter)."""
    if running_loop() is None:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


@dataclass(frozen=True, kw_only=True)
class CallContext:
    """What every transform sees besides its input: resources and secrets. Batch and
    realtime views each add what they know (an interval, a request time).

    `spend(name, tokens)` takes more tokens of a rate-limited resource when one call makes
    several requests (`await aspend(...)` from an async transform).
    """

    resources: Resources
    secrets: Secrets
    _limits: Any = field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def spend(self, resource: str, tokens: float) -> None:
        """Block until `tokens` more of the resource's rate limit are available (sync code)."""
        assert self._loop is not None and self._limits is not None
        if running_loop() is self._loop:
            raise ResourceError(
                "context.spend() was called from an async transform; use "
                "`await context.aspend(...)` there."
            )
        name = self.resources.provider(resource).name
        asyncio.run_coroutine_threadsafe(self._limits.take(name, tokens), self._loop).result()

    async def aspend(self, resource: str, tokens: float) -> None:
        """Wait until `tokens` more of the resource's rate limit are available (async code)."""
        assert self._limits is not None
        await self._limits.take(self.resources.provider(resource).name, tokens)


@dataclass(frozen=True)
class ProviderContext:
    """What a resource provider sees: its own secrets."""

    secrets: Secrets
