"""The `rivulet` commands: parse arguments, call the engine, set the exit code."""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from engine.errors import RivuletError, SettingsError, one_line

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


class _Workers(click.ParamType):
    """A count of processes, or "auto": the machine's cores."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if value == "auto":
            return os.cpu_count() or 1
        try:
            return int(value)
        except ValueError:
            self.fail(f"'{value}' is neither a number of processes nor auto", param, ctx)


WORKERS = _Workers()


def _reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print a RivuletError as one paragraph (the traceback only with --debug) and exit 2;
    with --json, as a JSON object on stdout."""

    @click.option("--debug", is_flag=True, help="Show tracebacks.")
    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool, **kwargs: Any) -> Any:
        try:
            return command(*args, debug=debug, **kwargs)
        except RivuletError as exc:
            if debug:
                raise
            _bad_input(exc.kind, str(exc), kwargs.get("as_json", False), exc.exit_code)
        except Exception as exc:
            if debug or not _store_error(exc):
                raise
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            _bad_input(
                "Store error",
                f"{type(exc).__name__}{where}: {one_line(exc)}. Check the --output folder and "
                f"the files in it; rerun with --debug for the traceback.",
                kwargs.get("as_json", False),
            )

    return wrapper


def _bad_input(kind: str, message: str, as_json: bool, code: int = EXIT_BAD_INPUT) -> None:
    """Report an error that stopped the command (found before any work: exit 2), and exit."""
    if as_json:
        click.echo(json.dumps({"ok": False, "error": {"kind": kind, "message": message}}))
    else:
        click.echo(f"{kind}: {message}", err=True)
    sys.exit(code)


def _store_error(exc: Exception) -> bool:
    """An error of the store or a file in it: the OS, SQLite (the ledger), Arrow (Parquet)."""
    return isinstance(exc, OSError | sqlite3.Error) or type(exc).__module__.startswith("pyarrow")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rivulet")
def main() -> None:
    """Rivulet materializes features from batch data, with API calls in the loop."""


_ONLINE_STORE = click.option(
    "--online-store",
    metavar="redis://HOST:PORT/DB",
    envvar="RIVULET_ONLINE_STORE",
    help="Where online views keep their newest rows (default: SQLite beside the store).",
)


def _run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options `backfill` and `run` share."""
    options = [
        click.option("--output", default="offline_store", show_default=True, help="Store root."),
        click.option("--feature-view", "feature_views", multiple=True, help="Only this view."),
        click.option(
            "--workers", default="1", show_default=True, type=WORKERS, help="Processes, or auto."
        ),
        click.option(
            "--executor",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help="Where workers run: this machine's processes, or Ray actors.",
        ),
        click.option(
            "--ray-address",
            metavar="ADDR",
            help="The Ray cluster to join (default: start a local Ray).",
        ),
        click.option(
            "--limiter",
            metavar="redis://HOST:PORT/DB",
            envvar="RIVULET_LIMITER",
            help="Share each rate limit among every worker of every run through Redis.",
        ),
        _ONLINE_STORE,
        click.option("--secrets-file", type=click.Path(dir_okay=False), help="TOML secrets."),
        click.option(
            "--rate-limit",
            "rate_limits",
            multiple=True,
            metavar="PROVIDER=RPS",
            help="Override a resource provider's requests per second (repeatable).",
        ),
        click.option("--allow-stale", is_flag=True, help="Keep intervals of an older definition."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--start", required=True, type=_Time(), help="Start of the range (UTC unless given).")
@click.option("--end", required=True, type=_Time(), help="End of the range, exclusive.")
@click.option("--overwrite", is_flag=True, help="Recompute committed intervals too.")
@_run_options
@_reports_errors
def backfill(
    job: str,
    start: datetime,
    end: datetime,
    overwrite: bool,
    as_json: bool,
    debug: bool,
    **run: Any,
) -> None:
    """Materialize every interval of JOB's feature views in [START, END).

    Committed intervals are skipped, so a rerun resumes where a failed or killed one stopped.
    """
    from engine.materialize import backfill as run_backfill

    _execute(run_backfill, as_json, debug, job, start, end, overwrite=overwrite, **run)


@main.command("run")
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--until", type=_Time(), help="Compute intervals complete by then (default now).")
@_run_options
@_reports_errors
def run_command(job: str, until: datetime | None, as_json: bool, debug: bool, **run: Any) -> None:
    """The scheduled run: every complete interval since the last committed one.

    Exit code 0 when every interval succeeded (or none was due), 1 when one failed.
    """
    from engine.materialize import run_due

    _execute(run_due, as_json, debug, job, until, **run)


def _execute(entry: Callable[..., Any], as_json: bool, debug: bool, *args: Any, **run: Any) -> None:
    from engine.cli.display import RunProgress, print_failures, print_summary

    run["rate_limits"] = _parse_rates(run["rate_limits"])
    address = run.pop("ray_address")
    if run.pop("executor") == "ray":
        from engine.execute.ray import RayExecutor

        run["executor"] = RayExecutor(run["workers"], address)
    elif address is not None:
        raise SettingsError("--ray-address needs --executor ray.")
    with RunProgress(enabled=not as_json) as progress:
        summary = entry(*args, on_event=progress.update, **run)
    if summary.interrupted:  # stopping as asked: a further signal must not cut the summary
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        print_summary(summary)
    print_failures(summary, debug=debug)
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0 if summary.ok else EXIT_FAILED_INTERVALS)


@main.command("plan")
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--start", required=True, type=_Time(), help="Start of the range.")
@click.option("--end", required=True, type=_Time(), help="End of the range, exclusive.")
@click.option("--output", default="offline_store", show_default=True, help="Store root.")
@click.option("--feature-view", "feature_views", multiple=True, help="Only this view.")
@click.option("--overwrite", is_flag=True, help="Plan as `backfill --overwrite` would.")
@_reports_errors
def plan_command(
    job: str,
    start: datetime,
    end: datetime,
    output: str,
    feature_views: tuple[str, ...],
    overwrite: bool,
    debug: bool,
) -> None:
    """Show each interval's state and what a backfill would do; change nothing."""
    from engine.cli.display import print_plan
    from engine.materialize import plan

    planned, notes = plan(
        job, start, end, output=output, feature_views=feature_views, overwrite=overwrite
    )
    print_plan(planned, notes)


@main.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--output", default="offline_store", show_default=True, help="Store root.")
@_reports_errors
def status(job: str, output: str, debug: bool) -> None:
    """Per feature view of JOB: intervals committed, failed, stale; the last runs."""
    from engine.cli.display import print_runs, print_status
    from engine.reports import history, status

    loaded, views = status(job, output)
    print_status(loaded.name, views)
    print_runs(history(output, job=loaded.name, limit=5))


@main.command(name="test")
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--update", is_flag=True, help="Rewrite the golden files with this output.")
@click.option("--golden-dir", type=click.Path(file_okay=False), help="Golden files folder.")
@click.option("--workers", default="1", show_default=True, type=WORKERS, help="Worker processes.")
@click.option("--secrets-file", type=click.Path(dir_okay=False), help="TOML file of secrets.")
@_reports_errors
def golden_test(
    job: str,
    update: bool,
    golden_dir: str | None,
    workers: int,
    secrets_file: str | None,
    debug: bool,
) -> None:
    """Run JOB's GoldenTest range and compare the output with its golden files.

    Exit code 1 on a mismatch or a failed interval; --update rewrites the golden files.
    """
    from engine.cli.display import RunProgress
    from engine.testing import run_golden

    with RunProgress() as progress:
        result = run_golden(
            job,
            update=update,
            golden_dir=golden_dir,
            workers=workers,
            secrets_file=secrets_file,
            on_event=progress.update,
        )
    click.echo(result.render())
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0 if result.ok else EXIT_FAILED_INTERVALS)


@main.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.argument("feature_view")
@click.option("--start", type=_Time(), help="Only rows at or after this time.")
@click.option("--end", type=_Time(), help="Only rows before this time.")
@click.option("--output", default="offline_store", show_default=True, help="Store root.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "parquet"]),
    default="table",
    show_default=True,
)
@click.option("--to", "destination", type=click.Path(dir_okay=False), help="File to write.")
@_reports_errors
def read(
    job: str,
    feature_view: str,
    start: datetime | None,
    end: datetime | None,
    output: str,
    output_format: str,
    destination: str | None,
    debug: bool,
) -> None:
    """Print FEATURE_VIEW's committed rows in [START, END) (parquet needs --to FILE)."""
    from engine.retrieve.offline import read_features, write_table

    table = read_features(job, feature_view, output=output, start=start, end=end)
    write_table(table, output_format, destination)


@main.command()
@click.option("--output", default="offline_store", show_default=True, help="Store root.")
@click.option("--limit", default=20, show_default=True, help="How many runs.")
@_reports_errors
def history(output: str, limit: int, debug: bool) -> None:
    """Recent runs on the store, newest first, with their outcome."""
    from engine.cli.display import print_runs
    from engine.reports import history as recent_runs

    print_runs(recent_runs(output, limit=limit))


def _parse_rates(values: tuple[str, ...]) -> dict[str, float]:
    rates = {}
    for value in values:
        name, _, rate = value.partition("=")
        try:
            rates[name.strip()] = float(rate)
        except ValueError:
            raise SettingsError(
                f"--rate-limit '{value}' is not PROVIDER=REQUESTS_PER_SECOND, e.g. openai=50."
            ) from None
    return rates


@main.command()
@click.argument("job", type=click.Path(dir_okay=False))
@_reports_errors
def validate(job: str, debug: bool) -> None:
    """Import JOB, check its definitions and probe its sources without running anything."""
    from engine.cli.display import print_job
    from engine.reports import validate as validate_job

    print_job(*validate_job(job))


@main.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default="1", show_default=True, type=WORKERS, help="Server processes.")
@click.option("--secrets-file", type=click.Path(dir_okay=False), help="TOML file of secrets.")
@click.option(
    "--api-key-secret",
    metavar="SCOPE/KEY",
    help="Secret holding the API key requests must send (Authorization: Bearer <key>).",
)
@click.option(
    "--limiter",
    metavar="redis://HOST:PORT/DB",
    envvar="RIVULET_LIMITER",
    help="Share each rate limit among every server process and run through Redis.",
)
@_ONLINE_STORE
@click.option(
    "--output", default="offline_store", show_default=True, help="Store root (its online store)."
)
@_reports_errors
def serve(job: str, debug: bool, **settings: Any) -> None:
    """Serve JOB's realtime feature views over Tecton's HTTP API until Ctrl-C or SIGTERM."""
    try:
        from engine.serve.listen import ServeSettings, listen
    except ImportError as missing:
        raise SettingsError(
            f"rivulet serve needs {missing.name}: pip install 'rivulet[serve]' (it is not "
            f"installed)."
        ) from None

    listen(ServeSettings(job, **settings), announce=lambda line: click.echo(line, err=True))


@main.group()
def online() -> None:
    """The online store: where views with online=True keep their newest rows for serving."""


@online.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.option("--start", type=_Time(), help="Only intervals starting at or after this time.")
@click.option("--end", type=_Time(), help="Only intervals starting before this time.")
@click.option("--output", default="offline_store", show_default=True, help="Store root.")
@_ONLINE_STORE
@_reports_errors
def load(
    job: str,
    start: datetime | None,
    end: datetime | None,
    output: str,
    online_store: str | None,
    debug: bool,
) -> None:
    """Fill the online store from JOB's committed offline files (a new or rebuilt store).

    Loading twice changes nothing: a row never replaces a newer one.
    """
    from rich.progress import Progress

    from engine.cli.display import err
    from engine.publish import load_online

    with Progress(console=err) as progress:
        bar = progress.add_task("online load", total=None)
        loaded = load_online(
            job, start, end, output=output, online_store=online_store,
            on_progress=lambda done, total: progress.update(bar, completed=done, total=total),
        )  # fmt: skip
    click.echo(f"Published {loaded} interval(s) to the online store.")
