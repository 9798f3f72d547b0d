"""The `rivulet` commands: parse arguments, call the engine, set the exit code."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from engine.errors import RivuletError

EXIT_FAILED_INTERVALS = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Time(click.ParamType):
    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            self.fail(
                f"'{value}' is not a date or time such as 2024-10-26 or 2024-10-26T06:00",
                param,
                ctx,
            )


def _reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print a RivuletError as one paragraph (the traceback only with --debug) and exit 2."""

    @click.option("--debug", is_flag=True, help="Show tracebacks.")
    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool, **kwargs: Any) -> Any:
        try:
            return command(*args, debug=debug, **kwargs)
        except RivuletError as exc:
            if debug:
                raise
            click.echo(f"{exc.kind}: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rivulet")
def main() -> None:
    """Rivulet materializes features from batch data, with API calls in the loop."""


@main.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--start", required=True, type=_Time(), help="Start of the range (UTC unless given).")
@click.option("--end", required=True, type=_Time(), help="End of the range, exclusive.")
@click.option("--output", default="offline_store", show_default=True, help="Offline store root.")
@click.option("--feature-view", "feature_views", multiple=True, help="Only this view (repeatable).")
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes.")
@click.option("--secrets-file", type=click.Path(dir_okay=False), help="TOML file of secrets.")
@click.option(
    "--rate-limit",
    "rate_limits",
    multiple=True,
    metavar="PROVIDER=RPS",
    help="Override a resource provider's requests per second for the run (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_reports_errors
def backfill(
    job: str,
    start: datetime,
    end: datetime,
    output: str,
    feature_views: tuple[str, ...],
    workers: int,
    secrets_file: str | None,
    rate_limits: tuple[str, ...],
    as_json: bool,
    debug: bool,
) -> None:
    """Materialize every interval of JOB's feature views in [START, END)."""
    from engine.cli.display import RunProgress, print_failures, print_summary
    from engine.run import backfill as run_backfill

    with RunProgress(enabled=not as_json) as progress:
        summary = run_backfill(
            job,
            start,
            end,
            output=output,
            feature_views=feature_views,
            workers=workers,
            secrets_file=secrets_file,
            rate_limits=_parse_rates(rate_limits),
            on_event=progress.update,
        )
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        print_summary(summary)
    print_failures(summary, debug=debug)
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0 if summary.ok else EXIT_FAILED_INTERVALS)


def _parse_rates(values: tuple[str, ...]) -> dict[str, float]:
    rates = {}
    for value in values:
        name, _, rate = value.partition("=")
        try:
            rates[name.strip()] = float(rate)
        except ValueError:
            raise RivuletError(
                f"--rate-limit '{value}' is not PROVIDER=REQUESTS_PER_SECOND, e.g. openai=50."
            ) from None
    return rates


@main.command()
@click.argument("job", type=click.Path(dir_okay=False))
@_reports_errors
def validate(job: str, debug: bool) -> None:
    """Import JOB and check its definitions without running anything."""
    from engine.cli.display import print_job
    from engine.plan.environments import check_environments
    from engine.plan.job import load_job

    loaded = load_job(job)
    notes = check_environments(loaded.feature_views.values(), loaded.environments)
    print_job(loaded, notes)
