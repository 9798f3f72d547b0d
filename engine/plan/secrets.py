"""Resolving declared secrets to values before any work starts."""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from engine.define.feature_views import BatchFeatureView
from engine.define.secrets import Secret
from engine.errors import SecretError, SettingsError, one_line


def declared_secrets(views: Iterable[BatchFeatureView]) -> dict[Secret, str]:
    """Each Secret the views or their resource providers declare, with who declares it."""
    found: dict[Secret, str] = {}
    for view in views:
        owners = [(f"feature view '{view.name}'", view.secrets)]
        owners += [(f"resource provider '{p.name}'", p.secrets) for _, p in view.resource_providers]
        for owner, secrets in owners:
            for _, spec in secrets:
                if isinstance(spec, Secret):
                    found.setdefault(spec, owner)
    return found


def resolve_secrets(
    views: Iterable[BatchFeatureView], secrets_file: str | Path | None = None
) -> dict[Secret, str]:
    """Values for every declared secret, from `RIVULET_SECRET_<SCOPE>__<KEY>` or the file.

    The secrets file is TOML with one table per scope: `[openai]` then `api_key = "..."`.
    The environment wins over the file. Raises SecretError naming the first missing secret.
    """
    from_file = _read_file(secrets_file) if secrets_file else {}
    values: dict[Secret, str] = {}
    for secret, owner in declared_secrets(views).items():
        value = os.environ.get(secret.env_var)
        if value is None:
            value = from_file.get(secret.scope, {}).get(secret.key)
        if value is None:
            where = f" or in [{secret.scope}] of {secrets_file}" if secrets_file else ""
            raise SecretError(
                f"Secret scope '{secret.scope}', key '{secret.key}' (declared by {owner}) has no "
                f"value: set the environment variable {secret.env_var}{where}, or pass "
                f"--secrets-file with a [{secret.scope}] table holding '{secret.key}'."
            )
        values[secret] = str(value)
    return values


def _read_file(path: str | Path) -> Mapping[str, Mapping[str, str]]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"The secrets file '{path}' cannot be read: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message quotes no content, so no secret value can leak through it.
        raise SettingsError(f"The secrets file '{path}' is not valid TOML: {exc}.") from None
    if not all(isinstance(v, dict) for v in data.values()):
        raise SettingsError(
            f"The secrets file '{path}' must hold one table per scope: [openai] api_key = '...'."
        )
    return data


def secret_fragments(values: Iterable[str]) -> list[str]:
    """What to redact for each secret: the value, its lines and its one-line form (messages
    are folded to one line, and libraries may quote one line of a key), and the password
    inside a URL or DSN (libraries quote those alone, e.g. libpq's "invalid percent-encoded
    token"). Longest first, so a value is replaced before any part of it."""
    fragments = set()
    for value in values:
        fragments.update([value, one_line(value), *value.splitlines()])
        with contextlib.suppress(ValueError):  # not a URL
            fragments.add(urlsplit(value).password or "")
        fragments.update(re.findall(r"password\s*=\s*'?([^\s']+)", value))
    return sorted((f for f in fragments if len(f.strip()) >= 4), key=len, reverse=True)


def redactor(values: Iterable[str]) -> Callable[[str], str]:
    """A function that replaces every fragment of the secret `values` in a text by `***`."""
    fragments = secret_fragments(values)

    def redact(text: str) -> str:
        for fragment in fragments:
            text = text.replace(fragment, "***")
        return text

    return redact
