"""From the fractional LP to integer class counts: LP-guided greedy.

Measured (docs/batch-placement.md): floor(y) + greedy repair loses most where the LP splits big, valuable
gangs across pools, because floor drops them and the small jobs committed meanwhile leave no room to
put them back; re-solving the residual LP helps little. What works is to keep the greedy visit order
(priority, then value) and let the LP choose the pool: a first pass gives each class up to ceil(LP value)
members in the columns the LP used (largest LP value first), so no class crowds out the LP share of a
later one; a second, cost-ordered pass completes. Two visit orders are tried, by density (penalty per
node) and by penalty (big valuable gangs first), and the better result is kept (large models: by
penalty only).

``reround_small`` then keeps the rounded gangs of 64+ nodes and re-places every smaller class from a
second LP over the capacity they leave: given the big gangs, that LP is optimal for the small jobs and
nearly integral for them (10k jobs x 1k pools, seeds 1-3: 1.11% -> 0.60% gap after eject).

The classes that the LP split (or that the rounding moved off their LP columns) are few, at most about
one per pool. ``split_class_cols`` picks their columns for an exact HiGHS sub-MILP over the capacity
the other classes leave (the solver's "split-milp" stage), which recovers most of what rounding lost.

With several priority levels the flat LP ignores the priority rule, so rounding towards it makes the
repair evict a lot. ``priority_guide`` re-solves the LP with each level's penalties scaled up by
``PRIORITY_BOOST`` per level: the LP then places what the higher levels can use first, yet still
weighs cost and the lower levels when it picks pools. Measured at 10k jobs x 300 pools with 3 levels:
7.6% gap with the flat LP as guide, 7.2% / 6.0% / 5.6% with boosts 3 / 10 / 100 (a lexicographic
guide, one LP per level, was far worse: 32%). The flat LP stays the reported bound.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from overcast.placement.batch.classes import ClassModel
from overcast.placement.batch.fill import fill, priority_ranks
from overcast.placement.batch.relax import Relaxation, solve_relaxation

ORDERS = ("density", "value")
# Above this many columns only the "value" order is tried: it won on every such queue in the benchmark
# (10k x 1k, 50k x 300, 50k x 1k, flat and tiered) and each fill costs ~1 s CPU at 50k x 1k.
BOTH_ORDERS_MAX_COLS = 500_000
PRIORITY_BOOST = 100.0
# Residual re-rounding: classes below this many nodes are re-placed from a fresh LP over the capacity
# that the rounded bigger gangs leave (``reround_small``); its column generation stops once the
# Lagrangian bound is within RESIDUAL_TOL (it only guides a rounding, it bounds nothing).
RESIDUAL_NODES = 64
RESIDUAL_TOL = 1e-2
# Above this many class columns the residual step runs only with RESIDUAL_LARGE_MIN_S of budget left:
# 50k jobs x 1k pools (4.2M columns), seeds 1/2: 0.84 -> 0.41% and 0.58 -> 0.28% gap, but 1.4-2.2 s
# more (load ~2) on a pipeline of 8.4-9.7 s whose target is 10 s.
RESIDUAL_MAX_COLS = 2_000_000
RESIDUAL_LARGE_MIN_S = 2.5


def round_relaxation(cm: ClassModel, rel: Relaxation) -> tuple[np.ndarray, str]:
    """Best LP-guided fill over the visit orders; returns (y, order used)."""
    best, best_obj, best_order = None, np.inf, ORDERS[0]
    cap = np.ceil(rel.y - 1e-6).astype(np.int64)
    for order in ORDERS if cm.n_cols <= BOTH_ORDERS_MAX_COLS else ("value",):
        # First every class takes what the LP gave it (rounded up while room lasts), then the rest.
        y = fill(cm, fill(cm, prefer=rel.y, order=order, col_cap=cap))
        obj = cm.objective(y)
        if obj < best_obj:
            best, best_obj, best_order = y, obj, order
    assert best is not None
    return best, best_order


def priority_guide(cm: ClassModel, rel: Relaxation) -> Relaxation:
    """The LP to round towards: the flat LP with one level, else the priority-boosted LP."""
    boosted = guide_model(cm)
    if boosted is cm:
        return rel
    guide = solve_relaxation(boosted, start=np.flatnonzero(rel.y > 1e-6))
    return Relaxation(guide.y, rel.bound, guide.rounds, guide.cols, active=guide.active)


def guide_model(cm: ClassModel) -> ClassModel:
    """The model whose LP guides the rounding: ``cm`` with one priority level, else ``cm`` with each
    level's penalties boosted by PRIORITY_BOOST (see the module docstring)."""
    rank, n_levels = priority_ranks(cm)
    if n_levels == 1:
        return cm
    boost = min(PRIORITY_BOOST, 1e6 ** (1.0 / (n_levels - 1)))
    return dataclasses.replace(cm, penalty=cm.penalty * boost**rank)


def reround_small(
    cm: ClassModel, rel: Relaxation, y: np.ndarray, min_nodes: int = RESIDUAL_NODES
) -> np.ndarray:
    """Keep the gangs of at least ``min_nodes`` nodes where the rounding put them and re-place every
    smaller class from the LP over the capacity they leave (then fill, as in ``round_relaxation``).

    The rounding puts the big gangs first, in the pools the LP split them over, and the small jobs the
    LP had there move to dearer pools wherever the greedy finds room; the loss shows in their reduced
    costs (10k jobs x 1k pools, seed 1: 22k of the 38k above the LP is 1-8-node jobs in columns with
    positive reduced cost). Given the big gangs, the residual LP places the small classes optimally, and
    small classes are nearly integral in it (1-node ones exactly), so little is lost rounding it."""
    cls = cm.col_class
    small = cm.nodes < min_nodes
    if not small.any() or small.all():
        return y
    fixed = np.where(small[cls], 0, y)
    # Only over the LP's last columns and those it priced out (one flow): pricing every column gave
    # the same gap (10k x 1k seeds 1-6: mean 1.12% against 1.11%) in 2 flows instead of 1 on 4 of 6.
    residual = solve_relaxation(
        guide_model(cm),
        count=np.where(small, cm.count, 0),
        capacity=cm.capacity - cm.usage(fixed),
        cols=rel.active,
        start=np.flatnonzero((rel.y > 1e-6) | (y > 0)),
        split_tol=RESIDUAL_TOL,
        bound_in_child=False,
    )
    cap = np.where(small[cls], np.ceil(residual.y - 1e-6), 0).astype(np.int64)
    return fill(cm, fill(cm, fixed, prefer=residual.y, order="value", col_cap=cap))


def split_class_cols(cm: ClassModel, rel: Relaxation, y: np.ndarray, extra: int = 1) -> np.ndarray:
    """Columns of the split-class MILP: for every class the LP split (or the rounding moved), the
    columns the LP or the rounding used plus its ``extra`` cheapest ones."""
    cls = cm.col_class
    moved = (np.abs(rel.y - np.rint(rel.y)) > 1e-6) | (np.abs(y - rel.y) > 1e-6)
    chosen = np.zeros(cm.n_classes, dtype=bool)
    chosen[cls[moved]] = True
    rank = np.arange(cm.n_cols) - cm.col_indptr[cls]
    return np.flatnonzero(chosen[cls] & ((rel.y > 1e-6) | (y > 0) | (rank < extra)))


def big_gang_cols(
    cm: ClassModel, rel: Relaxation, y: np.ndarray, min_nodes: int, extra: int = 2
) -> np.ndarray:
    """Columns of the big-gang MILP: for every class of at least ``min_nodes`` nodes, the columns the
    LP or the rounding used plus its ``extra`` cheapest ones."""
    cls = cm.col_class
    rank = np.arange(cm.n_cols) - cm.col_indptr[cls]
    big = cm.nodes[cls] >= min_nodes
    return np.flatnonzero(big & ((rel.y > 1e-6) | (y > 0) | (rank < extra)))
