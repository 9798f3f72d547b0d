"""A worker's resources: each provider built once, on first need, and torn down at the end."""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from engine.define.resources import ResourceProvider
from engine.define.secrets import Secret
from engine.errors import ResourceError, RivuletError
from engine.work.context import ProviderContext, Secrets

log = logging.getLogger("rivulet")


class ResourcePool:
    """Builds each resource provider at most once and shares the result across tasks.

    A generator provider is resumed after its `yield` at `close()`; a returned object with
    `aclose()` or `close()` has it called. `builds` and `teardowns` count per provider name.
    """

    def __init__(self, secret_values: Mapping[Secret, str]) -> None:
        self._secret_values = secret_values
        self._resources: dict[str, Any] = {}
        self._teardowns: list[tuple[str, Any]] = []
        self.builds: Counter[str] = Counter()
        self.teardowns: Counter[str] = Counter()

    async def acquire(self, provider: ResourceProvider) -> Any:
        """The provider's resource, built now if this worker has not built it yet."""
        if provider.name not in self._resources:
            self._resources[provider.name] = await self._build(provider)
            self.builds[provider.name] += 1
        return self._resources[provider.name]

    async def _build(self, provider: ResourceProvider) -> Any:
        secrets = Secrets(
            f"Resource provider '{provider.name}'", provider.secrets, self._secret_values
        )
        args = (ProviderContext(secrets),) if provider.takes_context else ()
        try:
            made = provider.function(*args)
            if inspect.isgenerator(made):
                self._teardowns.append((provider.name, made))
                return next(made)
            if inspect.isasyncgen(made):
                self._teardowns.append((provider.name, made))
                return await anext(made)
            if inspect.isawaitable(made):
                made = await made
        except RivuletError:
            raise
        except Exception as exc:
            raise ResourceError(
                f"Resource provider '{provider.name}' failed to build its resource: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._teardowns.append((provider.name, made))
        return made

    async def close(self) -> None:
        """Tear down each built resource, newest first; a failing teardown is logged, not raised."""
        while self._teardowns:
            name, made = self._teardowns.pop()
            try:
                await _tear_down(made)
            except Exception as exc:
                log.warning("Teardown of resource provider '%s' failed: %s", name, exc)
            self.teardowns[name] += 1
        self._resources.clear()


async def _tear_down(made: Any) -> None:
    if inspect.isgenerator(made):
        next(made, None)
    elif inspect.isasyncgen(made):
        await anext(made, None)
    elif hasattr(made, "aclose"):
        await made.aclose()
    elif hasattr(made, "close"):
        made.close()
