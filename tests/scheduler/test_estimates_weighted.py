"""The factor weighs each finished job by the hours it ran (scheduler/estimates.py): many short honest
jobs cannot wash out a team's under-stated long ones; properties of the weighted percentile."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from overcast.scheduler.estimates import MIN_SAMPLES, TRUSTED, estimate_factor, weighted_percentile

RATIO = st.floats(0.0, 1e6, allow_nan=False)
HOURS = st.floats(0.0, 1e4, allow_nan=False)
RUNS = st.lists(st.tuples(RATIO, HOURS), max_size=60)

UNDERSTATED = [(20.0, 4.0)] * 5  # five jobs declared 0.2 h that ran 4 h: 20 h at 20x
SHORT_HONEST = [(1.0, 0.1)] * 50  # fifty 6-minute jobs that ran as declared: 5 h


def test_fifty_short_honest_jobs_do_not_wash_out_under_stated_long_ones() -> None:
    assert estimate_factor(UNDERSTATED + SHORT_HONEST) == 20.0
    # the rule it replaces, the plain percentile of the last 50 jobs, forgot them: 50 honest jobs
    last_50 = [ratio for ratio, _ in (UNDERSTATED + SHORT_HONEST)[-50:]]
    assert sorted(last_50)[math.ceil(0.8 * len(last_50)) - 1] == 1.0


def test_honest_hours_lower_the_factor_once_they_are_80_percent_of_the_run_time() -> None:
    # 20 h under-stated: the honest jobs must carry 80 h of the 100 h, 5 h of them the short ones
    assert estimate_factor(UNDERSTATED + SHORT_HONEST + [(1.0, 10.0)] * 7 + [(1.0, 4.9)]) == 20.0
    assert estimate_factor(UNDERSTATED + SHORT_HONEST + [(1.0, 10.0)] * 7 + [(1.0, 5.0)]) == 1.0


def test_a_job_that_ran_nothing_weighs_nothing() -> None:
    assert weighted_percentile([(0.0, 0.0)] * 100 + [(30.0, 0.5)]) == 30.0
    assert weighted_percentile([(3.0, 0.0)] * 10) is None
    assert estimate_factor([(3.0, 0.0)] * 10) == 1.0  # ran 0 h in all: no evidence
    # one job that ran and four that ran nothing are one job's evidence, below MIN_SAMPLES
    assert estimate_factor([(0.0, 0.0)] * 100 + [(30.0, 0.5)]) == 1.0
    assert estimate_factor([(10.0, 20.0)] + [(0.0, 0.0)] * 4) == 1.0
    assert estimate_factor([(10.0, 20.0)] * 2 + [(1.0, 0.5)] * 3) == 10.0


@settings(deadline=None)  # hypothesis's default 200 ms per example fails on a loaded CI machine
@given(RUNS)
def test_it_is_one_of_the_weighed_ratios(runs: list[tuple[float, float]]) -> None:
    weighed = [r for r, h in runs if round(h * 3_600_000) > 0]  # whole milliseconds of run
    high = weighted_percentile(runs)
    if not weighed:
        assert high is None
    else:
        assert high in weighed and min(weighed) <= high <= max(weighed)


@settings(deadline=None)
@given(st.lists(RATIO, min_size=1, max_size=60), st.floats(0.001, 1e4))
def test_equal_weights_give_the_nearest_rank_percentile(ratios: list[float], hours: float) -> None:
    nearest_rank = sorted(ratios)[math.ceil(0.8 * len(ratios)) - 1]  # the rule it replaces
    assert weighted_percentile([(r, hours) for r in ratios]) == nearest_rank


@settings(deadline=None)
@given(RUNS, st.lists(st.tuples(st.floats(0.0, 1.0), HOURS), min_size=1, max_size=60))
def test_adding_honest_evidence_never_raises_it(
    runs: list[tuple[float, float]], honest: list[tuple[float, float]]
) -> None:
    """``honest``: ratios in [0, 1] scaled into [0, the percentile]. From MIN_SAMPLES jobs on, jobs
    that ran within TRUSTED of their estimate never raise the factor either (below it, more jobs can
    make enough evidence to judge)."""
    high = weighted_percentile(runs)
    if high is not None:
        after = weighted_percentile(runs + [(f * high, h) for f, h in honest])
        assert after is not None and after <= high
    if sum(1 for _, h in runs if round(h * 3_600_000) > 0) >= MIN_SAMPLES:  # jobs that carry weight
        within = [(f * TRUSTED, h) for f, h in honest]
        assert estimate_factor(runs + within) <= estimate_factor(runs)
