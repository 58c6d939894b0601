"""Properties of ``solve`` on small random problems, exactness against brute force, priority behaviour."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.queue_gen import generate
from overcast.placement.batch import BatchProblem, check_solution, greedy, solve

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EPS = 1e-6


@st.composite
def problems(draw: st.DrawFn, max_jobs: int = 8, max_pools: int = 3) -> BatchProblem:
    n_jobs = draw(st.integers(1, max_jobs))
    n_pools = draw(st.integers(1, max_pools))
    capacity = [draw(st.one_of(st.integers(0, 8), st.none())) for _ in range(n_pools)]
    nodes, penalty, priority, compat = [], [], [], []
    for _ in range(n_jobs):
        nodes.append(draw(st.integers(1, 4)))
        penalty.append(float(draw(st.integers(0, 60))))
        priority.append(draw(st.integers(0, 2)))
        pools = draw(st.sets(st.integers(0, n_pools - 1), max_size=n_pools))
        compat.append({p: float(draw(st.integers(0, 50))) for p in sorted(pools)})
    # Duplicate some jobs so the class merge has something to merge.
    for j in range(draw(st.integers(0, 2))):
        src = j % n_jobs
        nodes.append(nodes[src])
        penalty.append(penalty[src])
        priority.append(priority[src])
        compat.append(dict(compat[src]))
    return BatchProblem.from_lists(
        nodes=nodes, penalty=penalty, compat=compat, capacity=capacity, priority=priority
    )


def brute_force(problem: BatchProblem) -> float:
    """Best objective over every assignment the checker accepts (capacity, compatibility, priority)."""
    options = [
        [-1, *problem.compat_pool[problem.compat_indptr[j] : problem.compat_indptr[j + 1]].tolist()]
        for j in range(problem.n_jobs)
    ]
    best = np.inf
    for combo in itertools.product(*options):
        a = np.array(combo, dtype=np.int64)
        if not check_solution(problem, a):
            best = min(best, problem.objective(a))
    return best


@SETTINGS
@given(problems(), st.sampled_from(["auto", "lp", "greedy", "milp"]))
def test_every_method_returns_a_checked_solution(problem: BatchProblem, method: str) -> None:
    sol = solve(problem, time_budget_s=2.0, method=method)
    assert sol.status != "fallback", sol.method  # no stage failed or produced an invalid solution
    a = sol.assignment
    assert check_solution(problem, a, sol.objective) == []
    # The rules, restated here on the raw arrays.
    placed = a >= 0
    used = np.bincount(a[placed], weights=problem.job_nodes[placed], minlength=problem.n_pools)
    assert np.all(used <= problem.pool_capacity)  # no pool over capacity
    assert np.all(problem.pair_index(np.flatnonzero(placed), a[placed]) >= 0)  # compatibility
    assert a.shape == (problem.n_jobs,)  # one pool (or none) per job: gangs never split, never twice
    for j in np.flatnonzero(~placed):  # priority: nothing of lower priority holds room j could use
        row = slice(problem.compat_indptr[j], problem.compat_indptr[j + 1])
        for p, cost in zip(problem.compat_pool[row], problem.compat_cost[row], strict=True):
            if cost >= problem.job_penalty[j]:
                continue
            lower = problem.job_nodes[placed & (a == p) & (problem.job_priority < problem.job_priority[j])]
            assert problem.pool_capacity[p] - used[p] + lower.sum() < problem.job_nodes[j]
    assert sol.objective == pytest.approx(problem.objective(a))


@SETTINGS
@given(problems())
def test_objective_between_lp_bound_and_greedy(problem: BatchProblem) -> None:
    sol = solve(problem, time_budget_s=2.0)
    base = greedy(problem)
    assert sol.lower_bound <= sol.objective + EPS * max(1.0, sol.objective)
    assert sol.objective <= base.objective + EPS * max(1.0, base.objective)


@settings(max_examples=30, deadline=None)
@given(problems(max_jobs=6, max_pools=3))
def test_exact_milp_matches_brute_force(problem: BatchProblem) -> None:
    sol = solve(problem, time_budget_s=5.0, method="milp")
    best = brute_force(problem)
    assert sol.objective == pytest.approx(best, rel=2e-4, abs=1e-6)
    assert sol.lower_bound <= best + 1e-6


def test_priority_beats_value_density() -> None:
    # A low-priority job is worth more per node, but the high-priority job must not be left out for it.
    p = BatchProblem.from_lists(
        nodes=[4, 4], penalty=[100.0, 400.0], compat=[{0: 1.0}, {0: 1.0}], capacity=[4], priority=[1, 0]
    )
    for method in ("auto", "greedy", "lp", "milp"):
        assert solve(p, method=method).assignment.tolist() == [0, -1], method


def test_priority_evicts_lower_priority_after_rounding() -> None:
    # Two pools; the cheap one fits either the big high-priority job or two small low-priority ones.
    p = BatchProblem.from_lists(
        nodes=[4, 2, 2, 2],
        penalty=[40.0, 300.0, 300.0, 300.0],
        compat=[{0: 1.0}, {0: 1.0, 1: 5.0}, {0: 1.0, 1: 5.0}, {0: 1.0}],
        capacity=[4, 2],
        priority=[2, 0, 0, 0],
    )
    for method in ("auto", "lp", "milp", "greedy"):
        sol = solve(p, method=method)
        assert sol.assignment[0] == 0, method
        assert check_solution(p, sol.assignment) == []


def test_generated_queue_end_to_end() -> None:
    q = generate(400, 40, seed=3)
    sol = solve(q.problem, time_budget_s=1.0)
    assert sol.status != "fallback", sol.method
    assert check_solution(q.problem, sol.assignment, sol.objective) == []
    base = greedy(q.problem)
    assert sol.lower_bound <= sol.objective <= base.objective
    assert 0 <= sol.gap < 0.2
    assert {"classes", "greedy", "lp", "round", "check", "total"} <= set(sol.timings)


def test_bad_arguments_are_clear_errors() -> None:
    p = BatchProblem.from_lists(nodes=[1], penalty=[1.0], compat=[{0: 0.5}], capacity=[1])
    with pytest.raises(ValueError, match="unknown method 'fast'"):
        solve(p, method="fast")
    with pytest.raises(ValueError, match="time_budget_s"):
        solve(p, time_budget_s=-1)


def test_empty_problem() -> None:
    p = BatchProblem.from_lists(nodes=[], penalty=[], compat=[], capacity=[3])
    sol = solve(p)
    assert sol.assignment.shape == (0,) and sol.objective == 0.0 and sol.status == "empty"


@pytest.mark.parametrize("levels", [1, 3])
def test_lns_and_split_milp_keep_solutions_valid(levels: int) -> None:
    import time

    from overcast.placement.batch.classes import build_classes
    from overcast.placement.batch.fill import fill
    from overcast.placement.batch.lns import improve
    from overcast.placement.batch.relax import solve_relaxation
    from overcast.placement.batch.rounding import round_relaxation
    from overcast.placement.batch.solver import _split_milp

    problem = generate(600, 60, seed=5, priority_levels=levels).problem
    cm = build_classes(problem)
    rel = solve_relaxation(cm)
    y, _ = round_relaxation(cm, rel)
    y_split = _split_milp(cm, rel, y, time_limit=0.5)
    y_lns, stats = improve(cm, y_split, time.perf_counter() + 0.7, guide=rel.y)
    assert stats.steps > 0
    assert cm.objective(y_lns) <= cm.objective(y_split) + 1e-6  # LNS never makes it worse
    for candidate in (y_split, fill(cm, y_lns)):
        assignment = cm.to_assignment(candidate, problem.n_jobs)
        assert check_solution(problem, assignment) == []
        assert rel.bound <= problem.objective(assignment) + 1e-6


@SETTINGS
@given(problems(max_jobs=10, max_pools=4))
def test_eject_moves_only_to_cheaper_and_keeps_capacity(problem: BatchProblem) -> None:
    from overcast.placement.batch.classes import build_classes
    from overcast.placement.batch.eject import improve_rounding
    from overcast.placement.batch.fill import fill
    from overcast.placement.batch.relax import solve_relaxation
    from overcast.placement.batch.rounding import round_relaxation

    cm = build_classes(problem)
    if not cm.n_cols:
        return
    rel = solve_relaxation(cm)
    y, _ = round_relaxation(cm, rel)
    y_ej, moves = improve_rounding(cm, y, rel.y)
    placed = np.bincount(cm.col_class, weights=y, minlength=cm.n_classes)
    assert np.array_equal(np.bincount(cm.col_class, weights=y_ej, minlength=cm.n_classes), placed)
    assert np.all(y_ej >= 0) and np.all(y_ej <= cm.col_ub)
    assert np.all(cm.usage(y_ej) <= cm.capacity + EPS)
    if moves:
        assert cm.objective(y_ej) < cm.objective(y)
    else:
        assert np.array_equal(y_ej, y)
    assignment = cm.to_assignment(fill(cm, y_ej), problem.n_jobs)
    assert check_solution(problem, assignment) == []
    assert rel.bound <= problem.objective(assignment) + 1e-6


@pytest.mark.parametrize("levels", [1, 3])
def test_solve_is_deterministic(levels: int) -> None:
    problem = generate(3000, 200, seed=7, priority_levels=levels).problem
    for method in ("lp", "greedy"):
        first, second = solve(problem, method=method), solve(problem, method=method)
        assert np.array_equal(first.assignment, second.assignment), method
        assert first.objective == second.objective
        assert np.array_equal([first.lower_bound], [second.lower_bound], equal_nan=True)  # greedy: nan
