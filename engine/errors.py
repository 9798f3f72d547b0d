"""Errors Rivulet raises, all rooted at `RivuletError`.

    RivuletError                 anything Rivulet reports to a user as one paragraph
    ├── DefinitionError          a feature view, source or provider is declared wrongly
    ├── JobLoadError             a job file cannot be imported
    ├── SettingsError            a run setting is wrong (time range, workers, secrets file)
    ├── SecretError              a declared secret has no value
    ├── EnvironmentMismatch      an Environment's requirement is not installed
    ├── SourceError              a batch source cannot be read for an interval
    ├── ResourceError            a resource provider failed or a resource is unknown
    ├── TransformError           a user's transform raised
    ├── OutputError              a transform returned features that do not match the declaration
    ├── StoreError               a file or the ledger of the offline store is damaged
    └── Interrupted              the run was stopped (Ctrl-C) before the interval finished

Every class takes a single message, so errors pickle across worker processes unchanged.
"""

from __future__ import annotations


class RivuletError(Exception):
    """Root of every error Rivulet reports; its message is one complete paragraph."""

    kind = "Error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def one_line(text: object) -> str:
    """Another library's message folded into one line, to quote inside a paragraph."""
    return " ".join(str(text).split())


class DefinitionError(RivuletError):
    """A feature view, source, entity or resource provider is declared wrongly."""

    kind = "Definition error"


class JobLoadError(RivuletError):
    """A job file does not exist or raises while it is imported."""

    kind = "Job error"


class SettingsError(RivuletError):
    """A run setting (time range, workers, output folder, secrets file) is wrong."""

    kind = "Settings error"


class SecretError(RivuletError):
    """A secret a feature view or provider declares has no value."""

    kind = "Secret error"


class EnvironmentMismatch(RivuletError):
    """A package an Environment requires is missing or at the wrong version."""

    kind = "Environment error"


class SourceError(RivuletError):
    """A batch source cannot be read, or lacks a column the feature view needs."""

    kind = "Source error"


class ResourceError(RivuletError):
    """A resource provider failed, or a transform asked for a resource it did not declare."""

    kind = "Resource error"


class TransformError(RivuletError):
    """A user's transform raised while computing features."""

    kind = "Transform error"


class OutputError(RivuletError):
    """A transform returned missing, extra or mistyped features."""

    kind = "Output error"


class StoreError(RivuletError):
    """A committed file or the ledger of the offline store cannot be read."""

    kind = "Store error"


class Interrupted(RivuletError):
    """The run was interrupted before this interval was committed."""

    kind = "Interrupted"
