"""Resolving declared secrets to values before any work starts."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus, urlsplit

from engine.define.feature_views import BatchFeatureView, RealtimeFeatureView
from engine.define.secrets import Secret
from engine.errors import SecretError, SettingsError, one_line

# A fragment shorter than this (spaces aside) is not redacted: "***" in place of every "abc"
# would garble messages and tell which short strings the secret holds.
SHORTEST_REDACTED = 4


View = BatchFeatureView | RealtimeFeatureView


def literal_secrets(views: Iterable[View]) -> list[str]:
    """Secret values the views or their providers give as string literals (to redact)."""
    return [
        spec
        for view in views
        for owner in (view, *(p for _, p in view.resource_providers))
        for _, spec in owner.secrets
        if isinstance(spec, str)
    ]


def declared_secrets(views: Iterable[View]) -> dict[Secret, str]:
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
    views: Iterable[View], secrets_file: str | Path | None = None
) -> dict[Secret, str]:
    """Values for every declared secret, from `RIVULET_SECRET_<SCOPE>__<KEY>` or the file.

    The secrets file is TOML with one table per scope: `[openai]` then `api_key = "..."`.
    The environment wins over the file. Raises SecretError naming the first secret that is
    missing, or empty (blank): it would authenticate nothing and cannot be redacted.
    """
    from_file = _read_file(secrets_file) if secrets_file else {}
    return {
        secret: secret_value(secret, owner, from_file, secrets_file)
        for secret, owner in declared_secrets(views).items()
    }


def secret_value(
    secret: Secret,
    owner: str,
    from_file: Mapping[str, Mapping[str, str]] | None = None,
    secrets_file: str | Path | None = None,
) -> str:
    """One secret's value, from the environment or else the secrets file (read when
    `from_file` is not given); SecretError naming it and `owner` when missing or blank."""
    if from_file is None:
        from_file = _read_file(secrets_file) if secrets_file else {}
    value = os.environ.get(secret.env_var)
    where = f"the environment variable {secret.env_var}"
    if value is None:
        value = from_file.get(secret.scope, {}).get(secret.key)
        where = f"[{secret.scope}] of {secrets_file}"
    named = f"Secret scope '{secret.scope}', key '{secret.key}' (declared by {owner})"
    if value is None:
        also = f" or in [{secret.scope}] of {secrets_file}" if secrets_file else ""
        raise SecretError(
            f"{named} has no value: set the environment variable {secret.env_var}{also}, or "
            f"pass --secrets-file with a [{secret.scope}] table holding '{secret.key}'."
        )
    if not str(value).strip():
        raise SecretError(f"{named} is empty in {where}; set it to the secret's value.")
    return str(value)


def short_secret_notes(values: Mapping[Secret, str]) -> list[str]:
    """A note for each secret too short to redact safely, naming it but never its value."""
    return [
        f"Secret scope '{secret.scope}', key '{secret.key}' is shorter than "
        f"{SHORTEST_REDACTED} characters, too short to redact safely: errors and dead letters "
        f"may show it. Use the real secret."
        for secret, value in values.items()
        if len(value.strip()) < SHORTEST_REDACTED
    ]


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
    token"); each also in every escaped form text shows it in (`_escaped_forms`). Fragments
    shorter than SHORTEST_REDACTED are left out. Longest first, so a value is replaced
    before any part of it."""
    parts = set()
    for value in values:
        parts.update([value, one_line(value), *value.splitlines()])
        with contextlib.suppress(ValueError):  # not a URL
            parts.add(urlsplit(value).password or "")
        parts.update(re.findall(r"password\s*=\s*'?([^\s']+)", value))
    fragments = {form for part in parts for form in _escaped_forms(part)}
    return sorted(
        (f for f in fragments if len(f.strip()) >= SHORTEST_REDACTED), key=len, reverse=True
    )


def _escaped_forms(text: str) -> set[str]:
    """`text` as is and as Python's repr shows it (`raise KeyError(secret)`) with either
    quote, as a JSON string (ASCII-only or not), URL-quoted (`quote`, `quote_plus`, '/'
    kept or not), and each of those folded to one line as messages are."""
    forms = {
        text,
        repr(text)[1:-1],  # Python's choice: double quotes when it holds ' and no "
        repr(text + '"')[1:-2],  # single quotes, ' escaped: with a " repr always takes them
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        # surrogatepass: a lone surrogate (an environment variable not in UTF-8) cannot fail
        quote(text, errors="surrogatepass"),
        quote(text, safe="", errors="surrogatepass"),
        quote_plus(text, errors="surrogatepass"),
    }
    return forms | {one_line(form) for form in forms}


def redactor(values: Iterable[str]) -> Callable[[str], str]:
    """A function that replaces every fragment of the secret `values` in a text by `***`."""
    fragments = secret_fragments(values)

    def redact(text: str) -> str:
        for fragment in fragments:
            text = text.replace(fragment, "***")
        return text

    return redact
