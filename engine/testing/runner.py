"""Run a job's GoldenTest: backfill its range into a temporary store, compare or update."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.define.feature_views import BatchFeatureView
from engine.define.golden import GoldenTest
from engine.errors import DefinitionError, GoldenError, SettingsError
from engine.materialize import OnEvent, backfill
from engine.plan.job import Job, load_job
from engine.summary import RunSummary
from engine.testing.diff import ViewDiff, compare
from engine.testing.rows import golden_text, read_golden, read_output

DECLARATION = (
    "golden = GoldenTest(start=datetime(2024, 10, 26), end=datetime(2024, 10, 27)), "
    "with `from engine import GoldenTest`"
)


@dataclass(frozen=True)
class GoldenResult:
    """The outcome of a golden test: one ViewDiff per feature view, or the backfill's error.

    With `updated` the diffs say what the rewrite changed and `written` lists the files
    rewritten; `ok` is then true unless the backfill failed (`error`, and `interrupted` when
    it was stopped with Ctrl-C).
    """

    job: str
    job_path: str
    golden_dir: Path
    start: datetime
    end: datetime
    views: tuple[ViewDiff, ...] = ()
    updated: bool = False
    written: tuple[Path, ...] = ()
    error: str | None = None
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and (self.updated or all(v.ok for v in self.views))

    def diff(self, view: str) -> ViewDiff:
        """The comparison of one feature view, by name."""
        return next(d for d in self.views if d.view == view)

    def render(self) -> str:
        """A readable report: per view whether it matches, and what differs (capped)."""
        lines = [
            f"Golden test of job '{self.job}' over [{self.start:%Y-%m-%d %H:%M}, "
            f"{self.end:%Y-%m-%d %H:%M}) UTC against {self.golden_dir} ({self.seconds:.1f} s)"
        ]
        if self.error is not None:
            return "\n".join([*lines, self.error])
        for diff in self.views:
            name, rows = diff.path.name, f"{diff.actual_rows} rows"
            if self.updated:
                verb = "wrote" if diff.path in self.written else "left unchanged"
                was = "new file" if diff.no_golden else diff.counts()
                lines.append(f"  {diff.view}: {verb} {name} ({rows}; {was})")
                if diff.no_golden:
                    continue
            elif diff.no_golden:
                lines.append(f"  {diff.view}: MISSING golden file {diff.path} ({rows} of output)")
                continue
            elif diff.ok:
                lines.append(f"  {diff.view}: ok, {rows} match {name}")
            else:
                lines.append(
                    f"  {diff.view}: DIFFERS from {name} (golden {diff.golden_rows} rows, "
                    f"output {diff.actual_rows}): {diff.counts()}"
                )
            lines += [f"      {line}" for line in diff.render()]
        bad = [d for d in self.views if not d.ok]
        if self.updated:
            lines.append(f"Updated {len(self.written)} of {len(self.views)} golden files.")
        elif bad:
            lines.append(
                f"FAILED: {len(bad)} of {_views(len(self.views))} differ from their golden files. "
                f"If the new output is right, run `rivulet test {self.job_path} --update`."
            )
        else:
            lines.append(f"Passed: {_views(len(self.views))} match their golden files.")
        return "\n".join(lines)


def find_golden_test(job: str | Path) -> GoldenTest:
    """The GoldenTest the job file declares at module level; a RivuletError if none or two.

    Example:
        test = find_golden_test("jobs/fraud_signals.py")
    """
    loaded = load_job(job)
    module = _module_of(loaded)
    found = list({id(v): v for v in vars(module).values() if isinstance(v, GoldenTest)}.values())
    if not found:
        raise GoldenError(
            f"Job '{loaded.name}' ({loaded.path}) declares no GoldenTest, so there is no range "
            f"to test. Declare one at module level, e.g. {DECLARATION}."
        )
    if len(found) > 1:
        raise DefinitionError(f"Job '{loaded.name}' declares {len(found)} GoldenTests; keep one.")
    try:
        views = loaded.select(found[0].feature_views)
    except SettingsError as exc:
        raise DefinitionError(f"The GoldenTest of job '{loaded.name}': {exc.message}") from exc
    if not views:
        raise DefinitionError(
            f"Job '{loaded.name}' declares a GoldenTest but no batch feature view to test."
        )
    return found[0]


def run_golden(
    job: str | Path,
    *,
    update: bool = False,
    golden_dir: str | Path | None = None,
    workers: int = 1,
    secrets_file: str | Path | None = None,
    on_event: OnEvent | None = None,
) -> GoldenResult:
    """Backfill the job's GoldenTest range into a temporary store and compare each feature
    view's rows with `<golden_dir>/<view>.jsonl`; with `update`, rewrite those files instead.

    `golden_dir` overrides the declared folder. Problems found before work starts (the job,
    its GoldenTest, a secret) raise a RivuletError; a failed interval is `result.error`.

    Example:
        result = run_golden("jobs/fraud_signals.py")
        print(result.render())
        sys.exit(0 if result.ok else 1)
    """
    began = time.perf_counter()
    test = find_golden_test(job)
    loaded = load_job(job)
    views = loaded.select(test.feature_views)
    folder = Path(golden_dir) if golden_dir is not None else test.directory(loaded.name)
    result = GoldenResult(loaded.name, str(job), folder, test.start, test.end, updated=update)
    with tempfile.TemporaryDirectory(prefix=f"rivulet-test-{loaded.name}-") as output:
        summary = backfill(
            loaded.path,
            test.start,
            test.end,
            output=output,
            feature_views=[view.name for view in views],
            workers=workers,
            secrets_file=secrets_file,
            on_event=on_event or (lambda event: None),
        )
        if not summary.ok:
            error = _failures(summary)
            return dataclasses.replace(
                result,
                error=error,
                interrupted=summary.interrupted,
                seconds=time.perf_counter() - began,
            )
        diffs, written = [], []
        for view in views:
            diff, rows_text = _check(view, Path(output), folder / f"{view.name}.jsonl", update)
            diffs.append(diff)
            if update and (diff.no_golden or _read(diff.path) != rows_text):
                _write(diff.path, rows_text)
                written.append(diff.path)
    return dataclasses.replace(
        result, views=tuple(diffs), written=tuple(written), seconds=time.perf_counter() - began
    )


def assert_matches_golden(job: str | Path, **kwargs: Any) -> GoldenResult:
    """run_golden(job, **kwargs), raising AssertionError with the rendered report unless ok.

    Example:
        def test_fraud_job(mock_api, monkeypatch):
            monkeypatch.setenv("FRAUD_API_URL", mock_api.url)
            assert_matches_golden("jobs/fraud_signals.py")
    """
    __tracebackhide__ = True
    result = run_golden(job, **kwargs)
    if not result.ok:
        raise AssertionError(result.render())
    return result


def _check(view: BatchFeatureView, output: Path, path: Path, update: bool) -> tuple[ViewDiff, str]:
    """The view's diff against `path` and the golden text of its output."""
    columns, rows = read_output(output, view)
    keys = [*(key.name for key in view.join_keys), view.timestamp_field]
    golden: tuple[list[str], list[dict[str, Any]]] = ([], [])
    missing = not path.is_file()
    if not missing:
        try:
            golden = read_golden(path)
        except GoldenError:
            if not update:
                raise
            missing = True  # unreadable: the update replaces it whole
    diff = compare(view.name, path, golden, (columns, rows), keys)
    return dataclasses.replace(diff, no_golden=missing), golden_text(rows)


def _failures(summary: RunSummary) -> str:
    if summary.interrupted:
        return "The backfill was interrupted, so nothing was compared."
    failed = len(summary.failed)
    lines = [
        f"The backfill failed in {failed} interval{'s' * (failed != 1)}, so nothing was compared:"
    ]
    lines += [f"  {r.task.label}: {r.error_kind}: {r.error}" for r in summary.failed]
    return "\n".join(lines)


def _module_of(loaded: Job) -> Any:
    """The module load_job imported the job as (any module of that file, failing that)."""
    path = str(loaded.path)
    modules = [
        (name, module)
        for name, module in list(sys.modules.items())
        if getattr(module, "__file__", None) and os.path.realpath(module.__file__) == path
    ]
    modules.sort(key=lambda item: not item[0].startswith("rivulet_job_"))
    return modules[0][1]


def _views(n: int) -> str:
    return f"{n} feature view{'' if n == 1 else 's'}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _write(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
