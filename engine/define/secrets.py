"""References to secrets; values are resolved at run time, never stored in definitions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Secret:
    """A secret named by scope and key, e.g. `Secret(scope="openai", key="api_key")`.

    At run time its value comes from the environment variable `env_var`
    (`RIVULET_SECRET_OPENAI__API_KEY`) or from a secrets file.
    """

    scope: str
    key: str

    @property
    def env_var(self) -> str:
        return f"RIVULET_SECRET_{self.scope}__{self.key}".upper()

    def __str__(self) -> str:
        return f"{self.scope}/{self.key}"
