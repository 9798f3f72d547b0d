"""Errors Rivulet raises, all rooted at `RivuletError`, in two branches that match exit codes.

    RivuletError                 anything Rivulet reports to a user as one paragraph
    ├── BadInput                 found before any work started: the CLI exits 2
    │   ├── DefinitionError      a feature view, source or provider is declared wrongly
    │   ├── JobLoadError         a job file cannot be imported
    │   ├── SettingsError        a run setting is wrong (time range, workers, rate, secrets file)
    │   ├── StaleIntervals       committed intervals were computed by another definition
    │   ├── SecretError          a declared secret has no (usable) value
    │   ├── EnvironmentMismatch  an Environment's requirement is not installed
    │   ├── SourceSchemaError    a source's files or columns do not fit its feature view
    │   ├── StoreError           a file or the ledger of the offline store is damaged or foreign
    │   ├── SpineError           a spine for historical features is malformed
    │   └── GoldenError          a job's golden test or golden files are unusable
    ├── WorkFailed               a failure during work: its interval fails, the CLI exits 1
    │   ├── SourceError          a batch source cannot be read for an interval
    │   ├── ResourceError        a resource provider failed or a resource is unknown
    │   ├── TransformError       a user's transform raised (or used an undeclared secret)
    │   ├── OutputError          a transform returned features that do not match the declaration
    │   ├── Interrupted          the run was stopped before the interval finished
    │   └── ViewTimeout          a realtime view did not answer within its timeout
    └── BadRequest               a request the feature server refuses; `status` is its 4xx code

Each error carries, besides its message, the fields that name what is at fault (`view`,
`feature`, `interval`, `provider`, each None when it does not apply), and pickles with them
between processes.
"""

from __future__ import annotations

from typing import Any


class RivuletError(Exception):
    """Root of every error Rivulet reports; its message is one complete paragraph."""

    kind = "Error"
    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        view: str | None = None,
        feature: str | None = None,
        interval: str | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.view = view
        self.feature = feature
        self.interval = interval
        self.provider = provider

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, vars(self)))


def _rebuild(cls: type[RivuletError], message: str, state: dict[str, Any]) -> RivuletError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


def one_line(text: object) -> str:
    """Another library's message folded into one line, to quote inside a paragraph."""
    return " ".join(str(text).split())


class BadInput(RivuletError):
    """Found before any work started: nothing was computed or written."""

    exit_code = 2


class WorkFailed(RivuletError):
    """A failure while computing an interval: that interval fails, the others go on."""

    exit_code = 1


class DefinitionError(BadInput):
    """A feature view, source, entity or resource provider is declared wrongly."""

    kind = "Definition error"


class JobLoadError(BadInput):
    """A job file does not exist or raises while it is imported."""

    kind = "Job error"


class SettingsError(BadInput):
    """A run setting (time range, workers, rate limit, output folder, secrets file) is wrong."""

    kind = "Settings error"


class StaleIntervals(BadInput):
    """Committed intervals were computed by another definition of their feature view."""

    kind = "Stale intervals"


class SecretError(BadInput):
    """A secret a feature view or provider declares has no value, or an unusable one."""

    kind = "Secret error"


class EnvironmentMismatch(BadInput):
    """A package an Environment requires is missing or at the wrong version."""

    kind = "Environment error"


class SourceSchemaError(BadInput):
    """A source matches no files, or lacks a column its feature view needs."""

    kind = "Source error"


class StoreError(BadInput):
    """A file or the ledger of the offline store is damaged, or a file is not Rivulet's."""

    kind = "Store error"


class SpineError(BadInput):
    """A spine handed to get_historical_features is malformed."""

    kind = "Spine error"


class GoldenError(BadInput):
    """A job's GoldenTest or golden files cannot be used."""

    kind = "Golden test error"


class SourceError(WorkFailed):
    """A batch source cannot be read for an interval."""

    kind = "Source error"


class ResourceError(WorkFailed):
    """A resource provider failed, or a transform asked for a resource it did not declare."""

    kind = "Resource error"


class TransformError(WorkFailed):
    """A user's transform raised while computing features."""

    kind = "Transform error"


class OutputError(WorkFailed):
    """A transform returned missing, extra or mistyped features."""

    kind = "Output error"


class Interrupted(WorkFailed):
    """The run was interrupted before this interval was committed."""

    kind = "Interrupted"


class ViewTimeout(WorkFailed):
    """A realtime feature view did not answer a request within its `timeout`."""

    kind = "Timeout"


class BadRequest(RivuletError):
    """A request the feature server refuses: malformed, unknown service, missing field."""

    kind = "Bad request"

    def __init__(self, message: str, status: int = 400, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.status = status
