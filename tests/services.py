"""Real services that some tests need: probe once, then skip (or fail) with the reason.

A test that needs a service calls `require_<service>()` (usually from a session fixture).
When the service does not answer the test is skipped with the reason, unless
RIVULET_REQUIRE_SERVICES=1 (as in CI), where it fails instead.

    def require_redis() -> str:
        return require_service("Redis", url, lambda: probe_redis(url))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest

T = TypeVar("T")

POSTGRES_DSN_ENV = "RIVULET_TEST_POSTGRES_DSN"
POSTGRES_DSNS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)
PROBE_TIMEOUT = 3  # seconds


def services_required() -> bool:
    """Whether a missing service fails the test instead of skipping it."""
    return os.environ.get("RIVULET_REQUIRE_SERVICES") == "1"


def require_service(name: str, where: str, probe: Callable[[], T]) -> T:
    """`probe()`'s result; if it raises, skip the test (fail under RIVULET_REQUIRE_SERVICES=1)
    with "<name> not reachable at <where>: <reason>"."""
    try:
        return probe()
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
        message = f"{name} not reachable at {where}: {reason}"
    if services_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_postgres() -> str:
    """A DSN of a PostgreSQL server that answers: $RIVULET_TEST_POSTGRES_DSN, or else the first of
    the local `postgres` and `root` users that can connect to database `test`."""
    dsns = [os.environ[POSTGRES_DSN_ENV]] if os.environ.get(POSTGRES_DSN_ENV) else POSTGRES_DSNS
    where = " or ".join(_without_password(dsn) for dsn in dsns)
    return require_service("PostgreSQL", where, lambda: _first_postgres(dsns))


def _first_postgres(dsns: Sequence[str]) -> str:
    import psycopg

    errors = []
    for dsn in dsns:
        try:
            with psycopg.connect(dsn, connect_timeout=PROBE_TIMEOUT, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return dsn
        except psycopg.Error as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    raise ConnectionError("; ".join(" ".join(str(exc).split()) for exc in errors))


def _without_password(dsn: str) -> str:
    """The DSN for messages: user@host:port/dbname, no password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
    except Exception:
        return f"${POSTGRES_DSN_ENV}"  # unparsable (or no psycopg): do not echo it
    return "{}@{}:{}/{}".format(*(parts.get(k, "") for k in ("user", "host", "port", "dbname")))
