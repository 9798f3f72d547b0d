"""`@resource_provider`: declares how a worker builds a shared resource such as an API client."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, overload

from engine.define.secrets import Secret
from engine.errors import DefinitionError

SecretSpec = Secret | str


@dataclass(frozen=True, eq=False)
class ResourceProvider:
    """A declared resource provider. Only a worker calls `function`, once per worker.

    `function` takes nothing or `context` (with `context.secrets`) and returns the resource,
    or yields it (code after `yield` is the teardown). A returned object with `close()` or
    `aclose()` is closed when the worker shuts down.
    """

    function: Callable[..., Any]
    name: str
    secrets: tuple[tuple[str, SecretSpec], ...] = ()
    description: str | None = None
    owner: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def takes_context(self) -> bool:
        return len(inspect.signature(self.function).parameters) == 1


def _check_provider(function: Callable[..., Any], name: str) -> None:
    if not callable(function):
        raise DefinitionError(f"@resource_provider '{name}' must decorate a function.")
    params = list(inspect.signature(function).parameters.values())
    if len(params) > 1 or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise DefinitionError(
            f"Resource provider '{name}' must take no parameters or just `context`, "
            f"but takes ({', '.join(p.name for p in params)})."
        )


def check_secrets(owner: str, secrets: Mapping[str, SecretSpec] | None) -> tuple:
    """Validate a `secrets={"name": Secret(...) | "literal"}` mapping; return it as sorted pairs."""
    for key, spec in (secrets or {}).items():
        if not isinstance(spec, Secret | str):
            raise DefinitionError(
                f"{owner} declares secret '{key}' as {type(spec).__name__}; "
                f"use Secret(scope=..., key=...) or a string literal."
            )
    return tuple(sorted((secrets or {}).items()))


@overload
def resource_provider(function: Callable[..., Any], /) -> ResourceProvider: ...
@overload
def resource_provider(
    *,
    name: str | None = None,
    description: str | None = None,
    owner: str | None = None,
    tags: dict[str, str] | None = None,
    secrets: dict[str, SecretSpec] | None = None,
) -> Callable[[Callable[..., Any]], ResourceProvider]: ...


def resource_provider(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    owner: str | None = None,
    tags: dict[str, str] | None = None,
    secrets: dict[str, SecretSpec] | None = None,
) -> ResourceProvider | Callable[[Callable[..., Any]], ResourceProvider]:
    """Declare a resource provider; usable bare or with arguments.

    Example:
        @resource_provider(secrets={"key": Secret(scope="openai", key="api_key")})
        def openai_client(context):
            from openai import OpenAI
            return OpenAI(api_key=context.secrets["key"])
    """

    def declare(fn: Callable[..., Any]) -> ResourceProvider:
        provider_name = name or getattr(fn, "__name__", "resource_provider")
        _check_provider(fn, provider_name)
        return ResourceProvider(
            function=fn,
            name=provider_name,
            secrets=check_secrets(f"Resource provider '{provider_name}'", secrets),
            description=description,
            owner=owner,
            tags=tuple(sorted((tags or {}).items())),
        )

    return declare(function) if function is not None else declare
