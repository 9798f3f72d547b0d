"""Checking that the packages a feature view's Environment requires are installed."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement

from engine.define.environment import Environment
from engine.define.feature_views import BatchFeatureView
from engine.errors import EnvironmentMismatch, one_line


def check_environments(
    views: Iterable[BatchFeatureView], environments: dict[str, Environment]
) -> list[str]:
    """Raise EnvironmentMismatch for a missing or mismatched requirement; return notes on
    environments that are named but not declared in the job (they are not checked)."""
    notes = []
    for view in views:
        if view.environment is None:
            continue
        environment = environments.get(view.environment)
        if environment is None:
            notes.append(
                f"Feature view '{view.name}' names environment '{view.environment}', which the "
                f"job does not declare; it runs in the current Python environment unchecked."
            )
            continue
        for line in environment.requirements:
            _check(view.name, environment.name, line)
    return notes


def _check(view: str, environment: str, line: str) -> None:
    try:
        requirement = Requirement(line)
    except InvalidRequirement as exc:
        raise EnvironmentMismatch(
            f"Environment '{environment}' (of feature view '{view}') has an invalid "
            f"requirement '{line}': {one_line(exc)}."
        ) from None
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        raise EnvironmentMismatch(
            f"Environment '{environment}' (of feature view '{view}') requires '{line}', but "
            f"'{requirement.name}' is not installed; install it with pip install '{line}'."
        ) from None
    if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
        raise EnvironmentMismatch(
            f"Environment '{environment}' (of feature view '{view}') requires '{line}', but "
            f"{requirement.name} {installed} is installed."
        )


def requirements(
    views: Iterable[BatchFeatureView], environments: dict[str, Environment]
) -> tuple[str, ...]:
    """Every requirement of the views' declared Environments, each once, in order."""
    found = [
        line
        for view in views
        if view.environment in environments
        for line in environments[view.environment].requirements
    ]
    return tuple(dict.fromkeys(found))
