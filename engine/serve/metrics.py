"""Prometheus metrics of a feature server (prometheus_client), for `GET /metrics`.

Requests and their latency are counted as they end; calls, retries, resource builds and
cache hits come from the runtime's counters, carried over after each request and before
each scrape. With several server processes (`rivulet serve --workers N`), each writes to
the folder `PROMETHEUS_MULTIPROC_DIR` names and a scrape sums them all (prometheus_client's
multiprocess mode), so one scrape shows the whole server.
"""

from __future__ import annotations

import os
from collections import Counter as Tally

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from engine.serve.transform import Runtime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; fine below 10 ms, where the time Rivulet adds to a call shows.
CARRY_EVERY = 64  # requests between carries in multiprocess mode (another process may scrape)
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    """The server's metrics, on a registry of their own (or the multiprocess folder)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self._registry = None if self._multiprocess else CollectorRegistry()
        on = {"registry": self._registry}
        self.requests = Counter(
            "rivulet_requests", "Requests answered, by endpoint and status code.",
            ["endpoint", "code"], **on,
        )  # fmt: skip
        self.latency = Histogram(
            "rivulet_request_seconds", "Time to answer a request, by endpoint.",
            ["endpoint"], buckets=LATENCY_BUCKETS, **on,
        )  # fmt: skip
        counted = {
            "calls": ("rivulet_calls", "Transform calls (attempts), by view.", "view"),
            "failed": ("rivulet_failed_calls", "Calls failed for good, by view.", "view"),
            "retries": ("rivulet_retries", "Retried attempts, by view.", "view"),
            "hits": ("rivulet_cache_hits", "Answers from the cache, by view.", "view"),
            "misses": ("rivulet_cache_misses", "Answers computed for the cache, by view.", "view"),
            "builds": ("rivulet_resource_builds", "Resources built, by provider.", "provider"),
            "rebuilds": ("rivulet_resource_rebuilds", "Broken resources rebuilt.", "provider"),
        }
        self._counters = {
            key: Counter(name, text, [label], **on) for key, (name, text, label) in counted.items()
        }
        self._carried: Tally[tuple[str, str]] = Tally()
        self._since_carry = 0

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        """Count one answered request; carry the runtime's counters over now and then (a
        scrape carries them too), as it costs more than the request's own counts."""
        self.requests.labels(endpoint, str(code)).inc()
        self.latency.labels(endpoint).observe(seconds)
        self._since_carry += 1
        if self._multiprocess and self._since_carry >= CARRY_EVERY:
            self.carry()

    def carry(self) -> None:
        """Add what the runtime counted since the last carry."""
        self._since_carry = 0
        now: Tally[tuple[str, str]] = Tally()
        for name, call in self._runtime.calls.items():
            stats = call.stats
            now["calls", name] = stats.calls
            now["failed", name] = stats.failed_calls
            now["retries", name] = sum(stats.retries.values())
            if call.cache is not None:
                now["hits", name] = call.cache.hits
                now["misses", name] = call.cache.misses
        for provider, count in self._runtime.stats.builds.items():
            now["builds", provider] = count
        for provider, count in self._runtime.stats.rebuilds.items():
            now["rebuilds", provider] = count
        for key, count in now.items():
            grown = count - self._carried[key]
            if grown > 0:
                self._counters[key[0]].labels(key[1]).inc(grown)
        self._carried = now

    def exposition(self) -> bytes:
        """The Prometheus text of every process of the server."""
        self.carry()
        if not self._multiprocess:
            assert self._registry is not None
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
