"""tests/services.py: a missing service skips with its reason, or fails if services are required."""

from __future__ import annotations

import pytest

from tests.services import require_postgres, require_service


def refused() -> None:
    raise ConnectionRefusedError("nothing listens\n\tthere")


def test_a_service_that_answers_gives_the_probe_result() -> None:
    assert require_service("Redis", "redis://127.0.0.1:6379", lambda: "PONG") == "PONG"


def test_a_service_that_does_not_answer_skips_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RIVULET_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_service("Redis", "redis://127.0.0.1:6379", refused)
    assert str(skipped.value) == (
        "Redis not reachable at redis://127.0.0.1:6379: "
        "ConnectionRefusedError: nothing listens there"
    )


def test_required_services_fail_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVULET_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception) as failed:
        require_service("Redis", "redis://127.0.0.1:6379", refused)
    assert str(failed.value).startswith("Redis not reachable at redis://127.0.0.1:6379: ")


def test_require_postgres_names_the_server_but_not_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RIVULET_REQUIRE_SERVICES", raising=False)
    monkeypatch.setenv("RIVULET_TEST_POSTGRES_DSN", "postgresql://me:hunter2@127.0.0.1:1/test")
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_postgres()
    message = str(skipped.value)
    assert message.startswith(
        "PostgreSQL not reachable at me@127.0.0.1:1/test: OperationalError: connection failed"
    )
    assert "hunter2" not in message
    assert "\n" not in message
