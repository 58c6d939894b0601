"""``solve``: the batch placement pipeline, each step timed.

1. classes   prune pairs that never pay off; merge identical jobs into classes (exact)
2. greedy    priority, then value density; always available, always checked (the fallback)
3. lp        min-cost-flow LP relaxation; its value is the lower bound reported with every solution;
             large models hand the last column-generation flows to a forked child (relax.py) and
             round the near-optimal flow meanwhile; the child's bound is collected at the end
4. round     LP-guided greedy: visit order by priority and value, pools by LP value (rounding.py);
             with several priority levels the guide is a second LP with priority-boosted penalties
   residual  large models: keep the rounded gangs of >= 64 nodes, re-place the smaller classes from an
             LP over the capacity they leave (rounding.reround_small)
   eject     move jobs into cheaper pools, relocating smaller jobs out of the way (eject.py)
5. milp      small models: exact HiGHS class MILP warm-started from the best so far, within the budget
   residual-2 large models with budget left: the residual step again, keeping gangs of >= 32 nodes
   big-gang  large models with >= 0.5 s left (>= 0.3 s up to 2M columns): exact sub-MILP over the gangs
             of >= 64 nodes (the rest fixed)
   split-milp large models: exact sub-MILP over the classes the LP split (60% of what is left), then
   lns       HiGHS sub-MILPs over neighbourhoods of related pools until the budget ends
6. check     independent checker; a solution that fails is never returned (greedy instead)

Priority is a constraint, not a weight: a left-out job never fits a pool that pays off for it, even
counting the capacity held there by lower-priority jobs (see check.py). Greedy and fill guarantee it by
construction, the MILPs carry it as constraints, and the checker verifies it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np

from overcast.placement.batch.background import Background
from overcast.placement.batch.check import InvalidSolution, check_solution
from overcast.placement.batch.classes import ClassModel, build_classes
from overcast.placement.batch.eject import improve_rounding
from overcast.placement.batch.fill import fill, priority_ranks
from overcast.placement.batch.lns import improve
from overcast.placement.batch.milp import solve_milp
from overcast.placement.batch.problem import BatchProblem, BatchSolution
from overcast.placement.batch.relax import LARGE_COLS, Relaxation, solve_relaxation, start_columns
from overcast.placement.batch.rounding import (
    RESIDUAL_LARGE_MIN_S,
    RESIDUAL_MAX_COLS,
    big_gang_cols,
    priority_guide,
    reround_small,
    round_relaxation,
    split_class_cols,
)

log = logging.getLogger(__name__)

METHODS = ("auto", "milp", "lp", "greedy")
MILP_MAX_COLS = 60_000  # class columns up to which the exact MILP is the improvement step
# Column generation hands the last rounds to a child process once its Lagrangian bound is within this
# of the restricted optimum; the primal of that round guides the rounding (relax._column_generation).
SPLIT_TOL = 1e-2
BOUND_WAIT_S = 10.0
BIG_GANG_NODES = 64  # big-gang MILP: classes of at least this many nodes are re-placed exactly
BIG_GANG_MIN_S = 0.5  # run it only if this much budget is left after eject
BIG_GANG_MAX_S = 2.0  # its HiGHS time limit at most (10k x 1k: optimal in 0.1-1.2 s)
# Up to 2M columns it also runs with less than IMPROVE_MIN_S left, from BIG_GANG_SHORT_MIN_S on, with a
# limit BIG_GANG_SHORT_MARGIN_S short of the deadline (10k x 1k after residual + eject, limit 0.3 s: seeds
# 2/3/4 0.802/0.516/1.738% -> 0.528/0.491/1.632% in 0.24-0.38 s; seeds 1/5/6 unchanged in 0.14-0.38 s).
BIG_GANG_SHORT_MIN_S = 0.3
BIG_GANG_SHORT_MARGIN_S = 0.1
# Large models start an improvement stage only with this much budget left: LNS's closing fill alone
# takes ~0.6 s at 50k x 1k, and HiGHS overshoots short limits (a 0.15 s window ran 1.2 s over).
IMPROVE_MIN_S = 0.5
# Above 2M class columns (50k jobs x 1k pools) each of them costs far more than its HiGHS limit (split-milp:
# 1.1-2.1 s for a 0.6-0.8 s limit, build and closing fill included) and none gained anything in three
# runs, yet they pushed the wall time from ~7.5 to 8.4-9.1 s for an 8 s budget: start them only with this
# much left.
LARGE_IMPROVE_MIN_S = 3.0
# With less than this left after eject, the big-gang MILP runs in a forked child beside split-milp and
# LNS instead of before them.
SIDE_MAX_LEFT_S = 3.0
SIDE_GRACE_S = 0.05  # waited for it past the deadline
# With budget left after eject (at least CASCADE_MIN_RATIO x what the residual step and eject took, plus
# IMPROVE_MIN_S), the residual step runs again with CASCADE_NODES: 10k jobs x 1k pools, seeds 1-6, mean
# gap 1.12 -> 0.92% for 0.45-0.85 s more (offline; at a 1.9 s budget there is no time for it); budget 3 s,
# seeds 1-3: 0.467/0.528/0.491% -> 0.426/0.418/0.491% in the time split-milp and the side MILP had.
CASCADE_NODES = 32
CASCADE_MIN_RATIO = 1.0
# Up to 2M columns, with less left but more than the first residual step took plus this margin, it runs
# without its eject: seeds 1-6 offline, 1.12 -> 0.99% mean for 0.13-0.33 s (the big-gang MILP in the same
# slot: 1.12 -> 1.05%).
CASCADE_SHORT_MARGIN_S = 0.1


def solve(
    problem: BatchProblem,
    *,
    time_budget_s: float = 1.5,
    method: str = "auto",
    seed: int = 0,
    need_bound: bool = True,
) -> BatchSolution:
    """Place the jobs of ``problem``. ``method``: "auto" (size decides MILP or LNS), "milp" (exact MILP
    whatever the size), "lp" (LP + rounding, no improvement), "greedy" (fallback only). The LP and the
    rounding always run to completion; improvement stops at ``time_budget_s`` after the start; the
    full-LP bound of a handed-over column generation is waited for (up to BOUND_WAIT_S more).
    ``need_bound=False`` (a scheduler that only uses the assignment): no child finishes the LP for the
    bound and nothing is waited for; ``lower_bound`` is then the Lagrangian one (valid, looser)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not np.isfinite(time_budget_s) or time_budget_s < 0:
        raise ValueError(f"time_budget_s must be a finite number >= 0, got {time_budget_s!r}")
    start = time.perf_counter()
    deadline = start + time_budget_s
    timings: dict[str, float] = {}
    clock = _Clock(timings)
    total_penalty = float(problem.job_penalty.sum())
    cm = build_classes(problem)
    clock.lap("classes")
    y_greedy = fill(cm)
    greedy_obj = cm.objective(y_greedy)
    clock.lap("greedy")
    best, best_obj, how, status = y_greedy, greedy_obj, "greedy", "feasible"
    bound = float("nan")
    rel: Relaxation | None = None
    side: Background | None = None
    side_how = ""
    if method != "greedy" and not cm.n_cols:
        bound, status = greedy_obj, "optimal"  # nothing can pay off anywhere: leaving all out is optimal
    if method != "greedy" and cm.n_cols:
        try:
            rel = solve_relaxation(
                cm, start=start_columns(cm, y_greedy), split_tol=SPLIT_TOL, bound_in_child=need_bound
            )
            bound = rel.bound
            clock.lap("lp")
            guide = priority_guide(cm, rel)
            if guide is not rel:
                clock.lap("priority-lp")
            y, order = round_relaxation(cm, guide)
            obj = cm.objective(y)
            if guide is not rel and cm.n_cols <= MILP_MAX_COLS:
                # Small model: also round towards the flat LP (fill repairs the priority rule); at low
                # load the rule does not bind and this is the better start for the MILP.
                y_flat, order_flat = round_relaxation(cm, rel)
                if cm.objective(y_flat) < obj:
                    y, obj, order = y_flat, cm.objective(y_flat), f"{order_flat}, flat LP"
            clock.lap("round")
            residual_from, residual_s = None, np.inf
            if cm.n_cols > MILP_MAX_COLS and (
                cm.n_cols <= RESIDUAL_MAX_COLS or deadline - time.perf_counter() > RESIDUAL_LARGE_MIN_S
            ):
                residual_from = time.perf_counter()
                y_re = reround_small(cm, guide, y)
                if cm.objective(y_re) < obj:
                    y, obj, order = y_re, cm.objective(y_re), f"{order}, residual"
                clock.lap("residual")
                residual_s = time.perf_counter() - residual_from
            y_ej, moves = improve_rounding(cm, y, guide.y)
            if moves:
                y_ej = fill(cm, y_ej)
                if cm.objective(y_ej) < obj:
                    y, obj, order = y_ej, cm.objective(y_ej), f"{order}, eject {moves}"
            clock.lap("eject")
            if obj < best_obj:
                best, best_obj, how = y, obj, f"lp-round({order})"
            left = deadline - time.perf_counter()
            large = method == "auto" and cm.n_cols > MILP_MAX_COLS
            improve_min = IMPROVE_MIN_S if cm.n_cols <= LARGE_COLS else LARGE_IMPROVE_MIN_S
            # A second residual step costs about what the first one (and eject) did; in a short slot it
            # runs without the eject that follows it.
            first_s = np.inf if residual_from is None else time.perf_counter() - residual_from
            full = left > CASCADE_MIN_RATIO * first_s + improve_min
            short = cm.n_cols <= LARGE_COLS and left > residual_s + CASCADE_SHORT_MARGIN_S
            if large and (full or short):
                y = _cascade(cm, guide, best, with_eject=full)
                if cm.objective(y) < best_obj:
                    best, best_obj, how = y, cm.objective(y), how + "+residual-2"
                clock.lap("residual-2")
                left = deadline - time.perf_counter()
            if large and improve_min < left < SIDE_MAX_LEFT_S:
                # Short budget: the second core runs the big-gang MILP while this one runs split-milp and
                # LNS; the better result is kept (they start from the same solution: they do not combine).
                side = Background(lambda y0=best: _big_gang_side(cm, guide, y0, deadline))
                side_how = how + "+big-gang-milp(side)"
            elif large and (
                left > max(BIG_GANG_MIN_S, improve_min)
                or (cm.n_cols <= LARGE_COLS and left > BIG_GANG_SHORT_MIN_S)
            ):
                # Also in the last few tenths of a second (the big-gang model is small: HiGHS overshoots
                # a 0.3 s limit by < 0.1 s), leaving BIG_GANG_SHORT_MARGIN_S for the fill and the check.
                limit = left if left > improve_min else left - BIG_GANG_SHORT_MARGIN_S
                y = big_gang_milp(cm, guide, best, time_limit=min(limit, BIG_GANG_MAX_S))
                obj = cm.objective(y)
                if obj < best_obj:
                    best, best_obj, how = y, obj, how + "+big-gang-milp"
                clock.lap("big-gang-milp")
                left = deadline - time.perf_counter()
            if large and left > improve_min:
                y = _split_milp(cm, guide, best, time_limit=max(0.6 * left, 0.05))
                obj = cm.objective(y)
                if obj < best_obj:
                    best, best_obj, how = y, obj, how + "+split-milp"
                clock.lap("split-milp")
                left = deadline - time.perf_counter()
            if method == "milp" or (method == "auto" and cm.n_cols <= MILP_MAX_COLS):
                best, best_obj, how, status = _exact(cm, best, best_obj, how, status, deadline)
                clock.lap("milp")
            elif method == "auto" and left > improve_min:
                y, stats = improve(cm, best, deadline, seed=seed, guide=guide.y)
                y = fill(cm, y)
                obj = cm.objective(y)
                if obj < best_obj:
                    best, best_obj, how = y, obj, how + f"+lns({stats.accepted}/{stats.steps})"
                clock.lap("lns")
            if side is not None:
                got = side.next(max(deadline - time.perf_counter(), 0.0) + SIDE_GRACE_S)
                side.cancel()
                if got is not None:
                    y = np.zeros(cm.n_cols, dtype=np.int64)
                    y[got[0]] = got[1]
                    if cm.objective(y) < best_obj:
                        best, best_obj, how = y, cm.objective(y), side_how
                clock.lap("side")
        except Exception as exc:  # a solver bug must not cost the scheduler its round: keep the best so far
            log.exception("batch placement: improvement stages failed, keeping %s", how)
            how, status = f"{how} (later stages failed: {exc!r})", "fallback"
        finally:
            if side is not None:
                side.cancel()
    if rel is not None and rel.pending is not None:
        # The child finishing column generation ran beside rounding, eject and LNS; its bound is the
        # full LP's. Waited for until BOUND_WAIT_S past the deadline, else the Lagrangian bound stays.
        bound = rel.final_bound(max(deadline - time.perf_counter(), 0.0) + BOUND_WAIT_S)
        clock.lap("bound")
    assignment = cm.to_assignment(best, problem.n_jobs)
    objective = problem.objective(assignment)
    errors = check_solution(problem, assignment, objective)
    if errors and how != "greedy":
        assignment = cm.to_assignment(y_greedy, problem.n_jobs)
        objective = problem.objective(assignment)
        how, status = f"greedy (fallback: {how} failed the check: {errors[0]})", "fallback"
        errors = check_solution(problem, assignment, objective)
    clock.lap("check")
    if errors:
        raise InvalidSolution("greedy fallback failed the check: " + "; ".join(errors))
    timings["total"] = time.perf_counter() - start
    return BatchSolution(
        assignment=assignment,
        objective=objective,
        lower_bound=bound,
        status=status if problem.n_jobs else "empty",
        method=how,
        timings=timings,
        total_penalty=total_penalty,
    )


def _big_gang_side(
    cm: ClassModel, guide: Relaxation, y: np.ndarray, deadline: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """In the child: the big-gang MILP until the deadline; yields (columns, counts) if it improved y."""
    y_big = big_gang_milp(cm, guide, y, time_limit=max(deadline - time.perf_counter() - 0.02, 0.05))
    if cm.objective(y_big) < cm.objective(y):
        nz = np.flatnonzero(y_big)
        yield nz, y_big[nz]


def _exact(
    cm: ClassModel, best: np.ndarray, best_obj: float, how: str, status: str, deadline: float
) -> tuple[np.ndarray, float, str, str]:
    """Whole-model MILP. The priority rows make HiGHS several times slower (1k x 300: 6.2 s against
    1.5 s CPU) and rarely bind at low load, so they are added lazily: first without them; if that
    optimum already keeps the rule (fill changes nothing), it is optimal; otherwise re-solve with them."""
    cols = np.arange(cm.n_cols)
    multi = priority_ranks(cm)[1] > 1
    for with_rows in (False, True) if multi else (True,):
        # The whole remaining budget each time: a first solve that times out leaves a repaired incumbent,
        # one that finishes early leaves the rest to the second.
        left = deadline - time.perf_counter()
        if with_rows and multi and left < 0.1:
            break  # no time for the harder model; fill has already repaired the rule
        res = solve_milp(
            cm, cols, cm.count, cm.capacity, time_limit=max(left, 0.05), warm=best, priority=with_rows
        )
        if res.y is None:
            continue
        y = fill(cm, res.y)  # restores maximality (HiGHS stops within its gap) and the priority rule
        obj = cm.objective(y)
        if obj <= best_obj:
            best, best_obj, how = y, obj, "milp"
        if res.optimal and np.array_equal(y, res.y):
            return best, best_obj, how, "optimal" if obj <= best_obj + 1e-9 else status
    return best, best_obj, how, status


def _cascade(cm: ClassModel, guide: Relaxation, y: np.ndarray, *, with_eject: bool) -> np.ndarray:
    """The residual step once more, one size class down: keep the gangs of CASCADE_NODES+ nodes as they
    are now (after the first residual step and eject) and re-place the smaller ones (then eject)."""
    y_re = reround_small(cm, guide, y, CASCADE_NODES)
    if not with_eject:
        return y_re
    y_ej, moves = improve_rounding(cm, y_re, guide.y)
    if moves:
        y_ej = fill(cm, y_ej)
    return y_ej if cm.objective(y_ej) < cm.objective(y_re) else y_re


def _split_milp(cm: ClassModel, rel: Relaxation, y: np.ndarray, *, time_limit: float) -> np.ndarray:
    """Free every member of the classes the LP split and re-place them exactly (HiGHS) over their
    LP/rounded columns and a few cheap ones, in the capacity the other classes leave; then fill."""
    return _free_and_resolve(cm, y, split_class_cols(cm, rel, y), time_limit=time_limit)


def big_gang_milp(cm: ClassModel, rel: Relaxation, y: np.ndarray, *, time_limit: float) -> np.ndarray:
    """The rounding's loss is in big gangs (10k x 1k: 256-GPU gangs the LP splits over cheap pools):
    free every class of at least BIG_GANG_NODES nodes and re-place them exactly over their LP and
    rounded columns and their 2 cheapest, in the capacity the smaller jobs leave; then fill."""
    return _free_and_resolve(cm, y, big_gang_cols(cm, rel, y, BIG_GANG_NODES), time_limit=time_limit)


def _free_and_resolve(cm: ClassModel, y: np.ndarray, cols: np.ndarray, *, time_limit: float) -> np.ndarray:
    if cols.size == 0:
        return y
    chosen = np.zeros(cm.n_classes, dtype=bool)
    chosen[cm.col_class[cols]] = True
    fixed = np.where(chosen[cm.col_class], 0, y)
    count = np.where(chosen, cm.count, 0)
    res = solve_milp(cm, cols, count, cm.capacity - cm.usage(fixed), time_limit=time_limit, warm=y)
    if res.y is None:
        return y
    fixed[cols] += res.y[cols]
    return fill(cm, fixed)


def greedy(problem: BatchProblem) -> BatchSolution:
    """The fallback alone: priority, then value density, cheapest pool with room (checked)."""
    return solve(problem, time_budget_s=0.0, method="greedy")


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self.last
        self.last = now
