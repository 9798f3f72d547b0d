"""Each rate-limited resource provider's limit for one worker, from declarations and overrides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.define.feature_views import BatchFeatureView
from engine.define.policies import rate_problem
from engine.define.resources import ResourceProvider
from engine.errors import SettingsError


def check_rate_overrides(
    providers: Mapping[str, ResourceProvider], overrides: Mapping[str, float]
) -> None:
    """SettingsError unless each override names a provider and is a usable rate."""
    for name, rate in overrides.items():
        if name not in providers:
            raise SettingsError(
                f"--rate-limit names resource provider '{name}', which no selected feature view "
                f"uses; they use: {', '.join(sorted(providers)) or 'none'}."
            )
        problem = rate_problem(rate)
        if problem:
            raise SettingsError(f"--rate-limit {name}={rate} {problem}.")


def worker_rates(
    views: Sequence[BatchFeatureView], overrides: Mapping[str, float], workers: int
) -> dict[str, tuple[float, float]]:
    """Each rate-limited provider's (requests per second, burst) for one of `workers` workers,
    so that together they keep to the run's limit. Overrides name providers by their name."""
    providers = {p.name: p for view in views for _, p in view.resource_providers}
    check_rate_overrides(providers, overrides)
    rates = {}
    for name, provider in providers.items():
        declared = provider.rate_limit
        rate = overrides.get(name, declared.requests_per_second if declared else None)
        if rate is None:
            continue
        burst = declared.burst if declared else max(1, round(rate / 10))
        rates[name] = (rate / workers, max(burst / workers, 1.0))
    return rates
