"""Secrets never reach what Rivulet writes, in any form they take in text; empty and short
secrets are caught before any work."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from urllib.parse import quote, quote_plus

import duckdb
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.plan.secrets import SHORTEST_REDACTED, redactor
from tests.conftest import run_cli


def forms(secret: str) -> set[str]:
    """The secret and each line of it, as they are, folded to one line, in Python's repr with
    either quote, as a JSON string (ASCII or not) and URL-quoted; those short enough to be
    left unredacted aside."""
    found = set()
    for part in {secret, *secret.splitlines()}:
        shown = repr(part)[1:-1]
        single = shown if repr(part).startswith("'") else shown.replace("'", "\\'")
        encoded = {
            part,
            shown,
            single,
            json.dumps(part)[1:-1],
            json.dumps(part, ensure_ascii=False)[1:-1],
            quote(part),
            quote(part, safe=""),
            quote_plus(part),
        }
        found |= encoded | {" ".join(form.split()) for form in encoded}
    return {form for form in found if len(form.strip()) >= SHORTEST_REDACTED}


# Text with quotes, backslashes, spaces, newlines and unicode; never '*', the mask itself.
TEXT = st.text(
    st.one_of(
        st.sampled_from("'\"\\ \n\t/?%+&=#@:é€😀"),
        st.characters(codec="utf-8", exclude_characters="*"),
    )
)


@settings(max_examples=300, deadline=None, database=None)
@given(secret=TEXT, before=TEXT, after=TEXT, data=st.data())
def test_every_form_of_a_secret_is_redacted(secret: str, before: str, after: str, data) -> None:
    assume(len(secret.strip()) >= SHORTEST_REDACTED)
    secret_forms = sorted(forms(secret))
    form = data.draw(st.sampled_from(secret_forms))
    redacted = redactor([secret])(before + form + after)
    assert "***" in redacted
    assert [f for f in secret_forms if f in redacted] == []


SECRET = "s3cr'et\\pa ss/w?rd"
VIEW = """
@batch_feature_view(name="{name}", mode="python", sources=[events], entities=[user],
    batch_schedule="1d", feature_start_time=datetime(2024, 10, 26),
    features=[Attribute("n", Int64)], secrets={{"k": Secret(scope="vault", key="token")}},
    on_error="{on_error}")
def {name}(row, context):
    if row["quantity"] % 2:
        raise KeyError(context.secrets["k"])
    return {{"n": row["quantity"]}}
"""
ONE_DAY = ("--start", "2024-10-26", "--end", "2024-10-27")
VAULT = "RIVULET_SECRET_VAULT__TOKEN"


def leaked(text: str) -> list[str]:
    return sorted(form for form in forms(SECRET) if form in text)


def test_a_secret_with_quotes_and_backslashes_is_redacted_everywhere(write_job, tmp_path):
    assert {"s3cr'et\\\\pa ss/w?rd", "s3cr\\'et\\\\pa ss/w?rd", "s3cr%27et%5Cpa%20ss/w%3Frd"} <= (
        forms(SECRET)
    )
    job = write_job(
        VIEW.format(name="skipped", on_error="skip") + VIEW.format(name="failed", on_error="fail")
    )
    store = tmp_path / "o"
    plain = run_cli("backfill", job, *ONE_DAY, "--output", store, env={VAULT: SECRET})
    assert plain.returncode == 1
    assert "Failed failed [2024-10-26 00:00, 2024-10-27 00:00): Transform error:" in plain.stderr
    assert 'KeyError: "***"' in plain.stderr
    as_json = run_cli(
        "backfill", job, *ONE_DAY, "--output", store, "--json", "--debug", env={VAULT: SECRET}
    )
    assert as_json.returncode == 1
    assert "Traceback" in as_json.stderr
    summary = json.loads(as_json.stdout)
    assert [f["feature_view"] for f in summary["failures"]] == ["failed"]
    assert 'KeyError: "***"' in summary["failures"][0]["error"]
    for result in (plain, as_json):
        assert leaked(result.stdout) == [] and leaked(result.stderr) == []

    with sqlite3.connect(store / "_rivulet" / "ledger.sqlite") as ledger:
        tables = [
            name
            for (name,) in ledger.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        rows = [row for table in tables for row in ledger.execute(f"SELECT * FROM {table}")]
        errors = ledger.execute("SELECT error FROM intervals WHERE state = 'failed'").fetchall()
    assert len(errors) == 1 and 'KeyError: "***"' in errors[0][0]
    assert leaked("\n".join(str(value) for row in rows for value in row)) == []

    # The 21 rows of odd quantity were skipped; each dead letter names its row.
    dead = duckdb.sql(
        f"SELECT error FROM read_parquet('{store}/_errors/skipped/*/*.parquet')"
    ).fetchall()
    assert len(dead) == 21 and all('KeyError: "***"' in error for (error,) in dead)
    assert leaked("\n".join(error for (error,) in dead)) == []


def test_an_empty_secret_stops_the_run(write_job, tmp_path: Path) -> None:
    job = write_job(VIEW.format(name="failed", on_error="fail"))
    for command in (("backfill", job, *ONE_DAY), ("run", job, "--until", "2024-10-27")):
        result = run_cli(*command, "--output", tmp_path / "o", env={VAULT: ""})
        assert result.returncode == 2
        assert result.stderr.startswith(
            "Secret error: Secret scope 'vault', key 'token' (declared by feature view 'failed') "
            "is empty"
        )
        assert not (tmp_path / "o").exists()


def test_a_secret_too_short_to_redact_is_noted_without_its_value(write_job, tmp_path) -> None:
    job = write_job(VIEW.format(name="failed", on_error="fail").replace("% 2", "> 9"))
    note = (
        "Secret scope 'vault', key 'token' is shorter than 4 characters, too short to redact "
        "safely: errors and dead letters may show it. Use the real secret."
    )
    plain = run_cli("backfill", job, *ONE_DAY, "--output", tmp_path / "a", env={VAULT: "x7z"})
    assert plain.returncode == 0, plain.stderr
    assert f"Note: {note}" in " ".join(plain.stderr.split())
    as_json = run_cli(
        "backfill", job, *ONE_DAY, "--output", tmp_path / "b", "--json", env={VAULT: "x7z"}
    )
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["notes"] == [note]
    assert "x7z" not in plain.stdout + plain.stderr + as_json.stdout + as_json.stderr
