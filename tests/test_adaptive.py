"""Calls that adapt to 429s: the AIMD policy on a fake clock, then a run against the mock API."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from rich.console import Console

from engine import backfill
from engine.cli import display
from engine.runtime.adaptive import CUT, GROWTH, LOWEST_RATE, AdaptiveGate
from engine.runtime.stats import Adapted, CallStats
from fixtures.mock_api import MockAPI, score
from tests.test_rate_limits import START, make_job


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TooManyRequests(Exception):
    status_code = 429


def gate(concurrency: int = 16) -> tuple[AdaptiveGate, Clock, CallStats]:
    clock, stats = Clock(), CallStats()
    return AdaptiveGate("v", concurrency, stats, clock=clock), clock, stats


def throttle(g: AdaptiveGate, clock: Clock, starts: int, seconds: float = 1.0) -> None:
    """`starts` unpaced calls spread over `seconds`, then a 429 to the last of them."""
    for _ in range(starts):
        epoch = g.start()
        clock.now += seconds / starts
    g.end(epoch, TooManyRequests())


def test_calls_without_429_are_only_counted() -> None:
    g, clock, stats = gate()
    for i in range(1000):
        epoch = g.start()
        clock.now += 0.001
        g.end(epoch, None if i % 2 else ValueError("a 400"))
    assert not g.paced and g.rate is None and g.limit == 16 and g.in_flight == 0
    assert stats.adapted == {}


def test_the_first_429_halves_the_rate_of_starts_over_the_last_second() -> None:
    g, clock, stats = gate()
    throttle(g, clock, 500, seconds=5.0)  # 100/s, of which the last second counts
    assert g.paced and g.rate == pytest.approx(100 * CUT, rel=0.02)
    assert g.limit == 16 * CUT
    assert stats.adapted["v"].cuts == 1
    assert stats.adapted["v"].lowest == stats.adapted["v"].final == g.rate


def test_a_429_right_at_the_start_reads_the_burst_as_a_rate() -> None:
    g, clock, _ = gate()
    throttle(g, clock, 20, seconds=0.001)  # 20 starts in 1 ms: over at least 10 ms
    assert g.rate == pytest.approx(20 / 0.01 * CUT)


def test_one_cut_per_window_of_calls_in_flight() -> None:
    g, clock, _ = gate()
    before = [g.start() for _ in range(10)]  # in flight when the first 429 comes
    clock.now += 1.0
    g.end(before[0], TooManyRequests())
    rate, limit = g.rate, g.limit
    for epoch in before[1:]:  # started before the cut: no further cut
        g.end(epoch, TooManyRequests())
    assert (g.rate, g.limit) == (rate, limit)
    paced = [g.start() for _ in range(3)]
    g.end(paced[0], TooManyRequests())  # started after the cut: cuts again
    assert (g.rate, g.limit) == (rate * CUT, limit * CUT)
    g.end(paced[1], TooManyRequests())
    assert (g.rate, g.limit) == (rate * CUT, limit * CUT)
    g.end(paced[2], None)
    assert g.in_flight == 0


def test_other_errors_do_not_cut() -> None:
    g, clock, _ = gate()
    throttle(g, clock, 100)
    rate = g.rate
    g.end(g.start(), TimeoutError("slow"))
    g.end(g.start(), ValueError("a 400"))
    assert g.rate == rate and g.in_flight == 0


def test_successes_grow_the_rate_back_additively_and_slowly() -> None:
    g, clock, _ = gate(concurrency=4)
    throttle(g, clock, 100)  # cut from 100/s to 50/s, in flight 4 to 2
    assert g.rate == pytest.approx(50, rel=0.02) and g.limit == 2
    ceiling = g.rate / CUT
    rate = g.rate
    g.end(g.start(), None)
    assert g.rate == pytest.approx(rate + GROWTH * ceiling / rate)
    assert g.limit == 2.5  # one more per window of calls
    for _ in range(49):  # a second of successes at the rate: +GROWTH of the ceiling
        g.end(g.start(), None)
    assert g.rate == pytest.approx(rate + GROWTH * ceiling, rel=0.01)
    for _ in range(1000):
        g.end(g.start(), None)
    assert g.limit == 4  # never above the view's concurrency
    assert g.rate < 2 * ceiling  # the rate grows on, by GROWTH of the ceiling a second


def test_cuts_stop_at_one_in_flight_and_the_lowest_rate() -> None:
    g, clock, stats = gate()
    throttle(g, clock, 10)
    for _ in range(20):
        g.end(g.start(), TooManyRequests())
    assert g.limit == 1 and g.rate == LOWEST_RATE
    assert stats.adapted["v"].lowest == LOWEST_RATE and stats.adapted["v"].cuts == 21


def test_it_reports_the_rate_of_successes_while_calls_were_in_flight() -> None:
    g, clock, stats = gate()
    throttle(g, clock, 100)
    for _ in range(2):  # two stretches of 10 successes in 0.5 s, a long pause between
        for _ in range(10):
            epoch = g.start()
            clock.now += 0.05
            g.end(epoch, None)
        clock.now += 60
    learnt = stats.adapted["v"]
    assert learnt.rate == pytest.approx(20 / 1.0)
    assert learnt.final == g.rate and learnt.lowest < learnt.final


def test_workers_add_up_what_they_learnt() -> None:
    one = CallStats(adapted={"v": Adapted(rate=20, lowest=10, final=24, cuts=3)})
    two = CallStats(adapted={"v": Adapted(rate=25, lowest=12, final=22, cuts=2)})
    merged = one.merge(two).merge(CallStats())
    assert merged.adapted == {"v": Adapted(rate=45, lowest=22, final=46, cuts=5)}


def test_paced_attempts_keep_to_the_limit_in_flight() -> None:
    async def main() -> int:
        g, clock, _ = gate(concurrency=8)
        throttle(g, clock, 10_000, seconds=0.001)  # paced at a rate too high to wait for
        assert g.limit == 4
        release, inside, most = asyncio.Event(), 0, 0

        async def one() -> None:
            nonlocal inside, most
            async with g.attempt():
                inside += 1
                most = max(most, inside)
                await release.wait()
                inside -= 1

        tasks = [asyncio.create_task(one()) for _ in range(12)]
        for _ in range(20):
            await asyncio.sleep(0)  # let every task get as far as it can
        assert inside == 4 and g.in_flight == 4
        release.set()
        await asyncio.gather(*tasks)
        assert g.in_flight == 0
        return most

    assert asyncio.run(main()) == 4


def test_a_run_with_no_declared_limit_adapts_to_a_rate_limited_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No rate limit declared, the default retry policy (5 attempts).
    job = make_job(tmp_path, 600, rate_limit="None", retry="None", view="score_view")
    with MockAPI(rate_limit=50, burst=5, log=True) as api:
        monkeypatch.setenv("FRAUD_API_URL", api.url)
        summary = backfill(job, START, START + timedelta(days=2), output=tmp_path / "o")
        outcomes = api.stats()["by_outcome"]
    assert summary.ok, summary.failed
    files = f"{tmp_path}/o/score_view/*/*.parquet"
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{files}', hive_partitioning = 0)").fetchall()
    assert len(rows) == 600 and all(r[2] == score(r[0], float(i % 97)) for i, r in enumerate(rows))
    assert outcomes["429"] > 0 and summary.stats.throttled == outcomes["429"]
    learnt = summary.stats.adapted["score_view"]
    assert learnt.cuts >= 1 and 5 < learnt.rate < 500 and learnt.lowest <= learnt.final
    reported = summary.to_dict()["adapted_to_429"]["score_view"]
    assert reported["calls_per_second"] == round(learnt.rate, 1)
    printed = io.StringIO()
    monkeypatch.setattr(display, "out", Console(file=printed, width=200))
    display.print_summary(summary)
    assert f"the API throttled 'score_view': calls adapted to ~{learnt.rate:,.0f}/s" in (
        printed.getvalue()
    )
