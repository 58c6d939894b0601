"""Estimate factors and corrected estimates (scheduler/estimates.py): unit cases and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overcast.scheduler.decide import decide
from overcast.scheduler.estimates import (
    MAX_HOURS,
    MIN_SAMPLES,
    corrected,
    correction,
    estimate_factor,
    team_factors,
)
from overcast.scheduler.queue import order_queue
from overcast.scheduler.snapshot import PendingJob
from tests.scheduler.builders import make_job, make_pool, make_snapshot

NOW = 100 * 3600.0
RATIO = st.floats(0.0, 1e6, allow_nan=False)
HOURS = st.floats(0.0, 1e4, allow_nan=False)  # a job's hours run: its weight


def _even(ratios: list[float]) -> list[tuple[float, float]]:
    """Jobs that each ran an hour: the weighted percentile is the plain one."""
    return [(r, 1.0) for r in ratios]


def test_the_factor_is_the_80th_percentile_and_only_above_2x() -> None:
    assert estimate_factor(_even([1, 1, 1, 1, 12, 12])) == 12.0  # 2 of 6 ran 12x: the 80th percentile's rank
    assert estimate_factor(_even([1, 1, 1, 1, 1, 12])) == 1.0  # one outlier in six is ignored
    assert estimate_factor(_even([2.0] * 10)) == 1.0  # within 2x: trusted as written
    assert estimate_factor(_even([2.5] * 10)) == 2.5
    assert estimate_factor(_even([40.0] * (MIN_SAMPLES - 1))) == 1.0  # too few to judge
    assert estimate_factor(_even([1e5] * 10)) == 1e5  # not capped: a cap would let the minimum estimate win
    assert team_factors({"a": _even([3.0] * 5), "b": _even([1.0] * 5), "c": []}) == {"a": 3.0}


def test_a_correction_keeps_the_larger_of_the_factor_and_what_the_job_already_ran() -> None:
    assert correction(1.0, 1.0) is None
    assert correction(1.0, 1.0, ran=0.5) is None
    fix = correction(0.5, 12.0, ran=3.0)
    assert fix is not None and fix.hours == 6.0
    assert fix.describe("ml") == "team ml's jobs ran 12x their expected_hours: ordered as 6 h"
    fix = correction(1.0, 3.0, ran=7.5)
    assert fix is not None and fix.hours == 7.5
    assert fix.describe("ml") == "it already ran 7.5 h (expected_hours 1 h): ordered as 7.5 h"
    assert correction(90_000.0, 100.0).hours == MAX_HOURS  # JobSpec's bound: the hours, not the factor
    fix = correction(0.001, 4000.0)
    assert fix is not None and fix.hours == pytest.approx(4.0)
    assert fix.describe("ml") == "team ml's jobs ran 4,000x their expected_hours: ordered as 4 h"


def test_a_resuming_job_is_corrected_by_what_is_left_and_a_restarting_one_by_its_longest_run() -> None:
    fix = correction(1.0, 10.0, ran=8.0, resumes=True)
    assert fix is not None and fix.hours == pytest.approx(2.0)
    assert (
        fix.describe("ml")
        == "team ml's jobs ran 10x their expected_hours, 8 h of it already run: ordered as 2 h"
    )
    assert correction(1.0, 10.0, ran=9.5, resumes=True) is None  # never below declared
    assert correction(1.0, 1.0, ran=30.0, resumes=True) is None  # its hours run are paid, not to come
    fix = correction(1.0, 10.0, ran=12.0)
    assert fix is not None and fix.hours == 12.0
    assert fix.describe("ml") == "it already ran 12 h (expected_hours 1 h): ordered as 12 h"


def test_a_corrected_job_prices_and_orders_as_its_corrected_hours() -> None:
    """decide() sees only the snapshot: the corrected copy goes after the honest job, and the stored
    spec object is not touched."""
    pool = make_pool("aws", capacity=1, gpus=1, price=10.0)
    cheat = make_job("cheat").gpus("H100", 1).team("fast").hours(0.5).pending(submitted_at=NOW)
    fair = make_job("fair").gpus("H100", 1).team("honest").hours(2.0).pending(submitted_at=NOW)
    assert [p.job_id for p in decide(make_snapshot([pool], [cheat, fair], now=NOW)).place] == ["cheat"]
    fix = correction(cheat.spec.expected_hours, 40.0)
    assert fix is not None
    moved = corrected(cheat, fix)
    assert (moved.spec.expected_hours, cheat.spec.expected_hours) == (20.0, 0.5)
    assert (moved.id, moved.submitted_at, moved.spec.team) == (cheat.id, cheat.submitted_at, "fast")
    assert [p.job_id for p in decide(make_snapshot([pool], [moved, fair], now=NOW)).place] == ["fair"]


@settings(deadline=None)  # hypothesis's default 200 ms per example fails on a loaded CI machine
@given(st.lists(st.tuples(RATIO, HOURS), max_size=60))
def test_a_factor_is_never_below_1_and_is_one_of_the_ratios(runs: list[tuple[float, float]]) -> None:
    factor = estimate_factor(runs)
    assert factor == 1.0 or factor in [r for r, _ in runs]
    if len(runs) < MIN_SAMPLES or max(runs, default=(0.0, 0.0))[0] <= 2.0:
        assert factor == 1.0


JOBS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([0.1, 0.5, 1.0, 4.0, 32.0]),
        st.floats(0.0, 90 * 3600.0),  # submitted
        st.integers(0, 1),  # priority
    ),
    min_size=1,
    max_size=12,
)


def _pending(jobs: list[tuple[str, float, float, int]]) -> list[PendingJob]:
    return [
        make_job(f"j{i}").gpus("H100", 1).team(team).hours(hours).priority(prio).pending(submitted_at=at)
        for i, (team, hours, at, prio) in enumerate(jobs)
    ]


def _apply(pending: list[PendingJob], factors: dict[str, float]) -> list[PendingJob]:
    out = []
    for job in pending:
        fix = correction(job.spec.expected_hours, factors.get(job.spec.team, 1.0))
        out.append(job if fix is None else corrected(job, fix))
    return out


@settings(max_examples=150, deadline=None)
@given(JOBS, st.sampled_from([1.0, 2.5, 40.0, 4000.0]))
def test_a_factor_only_ever_moves_its_teams_jobs_later(
    jobs: list[tuple[str, float, float, int]], factor: float
) -> None:
    """With every factor 1 the order is the declared one; a factor on team a never lets one of a's
    jobs overtake another team's job it came after (nor changes the order among the others)."""
    pending = _pending(jobs)

    def order(factors: dict[str, float]) -> list[str]:
        return [j.id for j in order_queue(_apply(pending, factors), now=NOW)]

    before = order({})
    assert order({"a": 1.0, "b": 1.0, "c": 1.0}) == before
    after = order({"a": factor})
    team = {j.id: j.spec.team for j in pending}
    for i, first in enumerate(before):
        for second in before[i + 1 :]:
            if team[second] == "a" and team[first] != "a":
                assert after.index(first) < after.index(second)
            if "a" not in (team[first], team[second]):
                assert after.index(first) < after.index(second)


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0])
def test_a_factor_at_or_below_1_changes_nothing(factor: float) -> None:
    assert correction(2.0, factor) is None
