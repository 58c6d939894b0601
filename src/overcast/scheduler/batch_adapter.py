"""Batch adapter: many pending jobs competing for capacity -> one BatchProblem per priority level.

Why per level: the solver trades jobs against each other by value, and a strict priority order must not
be traded away, so decide() solves each level on the capacity the levels above it left (highest first).
Within a level, leaving a job out costs the same per node for every job and more than any pool it could
use, so the solver places whatever fits, then minimises expected cost; the solver's priority inside the
level follows the queue order (``solver_tiers``). The solver knows nothing about quotas, the
soft ``avoid_pools`` rule, or how a team's budget shrinks as its jobs are placed (it only sees the
pools each job may use alone): every assignment is re-checked here in queue order against the live
``Usage`` (capacity and quota) and the list-price gate (``burst.py``), and jobs the solver left out
or that fail the check get one single-job placement on what is left, which also yields their "why
not" text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from overcast.placement import score
from overcast.placement.batch import BatchProblem, solve
from overcast.placement.filters import Request, request_key, run_filters
from overcast.placement.index import PoolIndex, Usage
from overcast.scheduler.burst import ListPriceGate
from overcast.scheduler.queue import slowdown_tier
from overcast.scheduler.sequential import place_in_order
from overcast.scheduler.snapshot import PendingJob, Place

log = logging.getLogger(__name__)

AVOID_SURCHARGE = 1.0  # x the job's dearest pool cost, added to pools the job should avoid


def place_level(
    jobs: list[PendingJob],
    index: PoolIndex,
    usage: Usage,
    *,
    now: float,
    time_budget_s: float,
    misses: dict[tuple, str],
    order: str = "slowdown",
    gate: ListPriceGate | None = None,
) -> tuple[list[Place], list[tuple[PendingJob, str]]]:
    """Place one priority level's ``jobs`` (in queue order) with the batch solver. Mutates ``usage``;
    ``misses`` and ``gate`` as in ``sequential.place_in_order``."""
    placed: list[Place] = []
    leftover: list[PendingJob] = []
    assignment = _solve_level(
        jobs, index, usage, now=now, time_budget_s=time_budget_s, order=order, gate=gate
    )
    for job, position in zip(jobs, assignment, strict=True):
        nodes = job.spec.num_nodes
        if position >= 0 and _fits(index, usage, position, nodes) and _passes(gate, job, index, position):
            usage.take(index, position, nodes)
            pool = index.pools[position]
            reason = (
                f"batch solver over {len(jobs)} jobs of priority {job.spec.priority}: "
                f"{pool.purchase.value} in {pool.provider}/{pool.region}, "
                f"${pool.marginal_price_per_node_hour * nodes:,.2f}/h"
            )
            placed.append(Place(job.id, pool.id, nodes, reason))
        else:
            leftover.append(job)
    more, unplaced = place_in_order(leftover, index, usage, now=now, misses=misses, gate=gate)
    return placed + more, unplaced


def _passes(gate: ListPriceGate | None, job: PendingJob, index: PoolIndex, position: int) -> bool:
    """The gate allows ``job`` on ``position`` now (the solver saw each job's allowance alone, not
    what earlier jobs of its team took off the budget); if so the job's cost is taken off."""
    if gate is None or not gate.restricted(job, index):
        return True
    cost = float(score.expected_cost(index, np.array([position]), job.spec)[0])
    if gate.why_not(job, index, position, cost) is not None:
        return False
    gate.took(job, index, position, cost)
    return True


def _fits(index: PoolIndex, usage: Usage, position: int, nodes: int) -> bool:
    """Room for ``nodes`` more nodes in the pool and under its quotas (scalar: called once per job)."""
    if index.free[position] - usage.nodes[position] < nodes:
        return False
    gpus = nodes * index.gpus[position]
    return all(q < 0 or index.quota_left[q] - usage.quota_gpus[q] >= gpus for q in index.quota_of[position])


def _solve_level(
    jobs: list[PendingJob],
    index: PoolIndex,
    usage: Usage,
    *,
    now: float,
    time_budget_s: float,
    order: str,
    gate: ListPriceGate | None,
) -> np.ndarray:
    """Pool position per job (-1: left out) from the batch solver."""
    try:
        problem, pools = build_problem(jobs, index, usage, now=now, order=order, gate=gate)
        if problem.n_pairs == 0:
            return np.full(len(jobs), -1)
        solution = solve(problem, time_budget_s=time_budget_s, need_bound=False)  # only placements are used
    except Exception:  # a solver bug must not stop scheduling: single-job placement takes the level
        log.exception(
            "batch solver failed (%d jobs, %d pools); placing them one by one", len(jobs), len(index.pools)
        )
        return np.full(len(jobs), -1)
    return np.where(solution.assignment >= 0, pools[np.maximum(solution.assignment, 0)], -1)


def build_problem(
    jobs: Iterable[PendingJob],
    index: PoolIndex,
    usage: Usage,
    *,
    now: float,
    order: str = "slowdown",
    gate: ListPriceGate | None = None,
) -> tuple[BatchProblem, np.ndarray]:
    """The BatchProblem for ``jobs`` on what ``usage`` leaves free, and the index position of each of
    its pools. Jobs with the same request share one filter run."""
    jobs = list(jobs)
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    per_node = 1.0
    compatible: dict[tuple, np.ndarray] = {}  # request key -> pool positions
    costs: dict[tuple, np.ndarray] = {}  # + hours and checkpointing -> cost per pool
    gated: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # + team -> what the gate leaves of them
    for job in jobs:
        spec = job.spec
        key = request_key(spec)
        if key not in compatible:
            compatible[key] = _compatible(Request.of(spec), index, usage, now=now)
        positions = compatible[key]
        cost_key = (key, spec.expected_hours, bool(spec.checkpoint_dir))
        if cost_key not in costs:
            costs[cost_key] = score.expected_cost(index, positions, spec)
        cost = costs[cost_key]
        if gate is not None:  # its rules read only the job's shape, hours and team
            gate_key = (cost_key, spec.team)
            if gate_key not in gated:
                if gate.restricted(job, index):
                    allowed = gate.usable(job, index, positions, cost)
                    positions, cost = positions[allowed], cost[allowed]
                gated[gate_key] = (positions, cost)
            positions, cost = gated[gate_key]
        dearest = float(cost.max()) if len(cost) else 0.0
        if job.avoid_pools and len(positions):
            avoid = np.isin(positions, [index.position_of.get(p, -1) for p in job.avoid_pools])
            cost = cost + avoid * (AVOID_SURCHARGE * dearest + 1.0)
        rows.append((positions, cost))
        # what keeping one node of this job waiting must outweigh: its dearest pool, surcharge included
        per_node = max(per_node, (2 * (AVOID_SURCHARGE + 1) * dearest + 1.0) / spec.num_nodes)
    # Waiting is priced per node, the same for every job of the level, and above any pool's cost: a
    # free node always goes to some job, and the solver never prefers a job for its length (a penalty
    # that grew with expected_hours made it run the longest jobs first, far down the queue).
    penalty = np.array([job.spec.num_nodes * per_node for job in jobs])
    tiers = solver_tiers(jobs, now) if order == "slowdown" else wait_tiers(jobs, now)
    indptr = np.zeros(len(jobs) + 1, dtype=np.int64)
    np.cumsum([len(r[0]) for r in rows], out=indptr[1:])
    positions = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, dtype=np.int64)
    used, pool = np.unique(positions, return_inverse=True)  # index positions -> problem pool numbers
    cost = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0)
    problem = BatchProblem(
        job_nodes=np.array([job.spec.num_nodes for job in jobs], dtype=np.int64),
        job_gpus=np.array(
            [max((a.count for a in job.spec.resources.accelerators), default=0) for job in jobs],
            dtype=np.int64,
        ),
        job_penalty=penalty,
        job_priority=tiers,
        compat_indptr=indptr,
        compat_pool=pool,
        compat_cost=cost,
        pool_capacity=np.floor(np.maximum(index.free_nodes(used, usage), 0)),
    )
    return problem, used


def solver_tiers(jobs: list[PendingJob], now: float) -> np.ndarray:
    """The solver's priority for each job of one level under the slowdown order (``queue.py``): one
    level per (slowdown tier, expected hours) pair, so the solver never leaves out a job that ranks
    higher in the queue where it would fit by taking room from lower-ranked jobs, and packs freely among
    jobs of the same pair (few pairs: tiers grow by doublings and estimates cluster on round numbers)."""
    keys = [(slowdown_tier(job, now), -job.spec.expected_hours) for job in jobs]
    ranks = {k: r for r, k in enumerate(sorted(set(keys)))}
    return np.array([ranks[k] for k in keys], dtype=np.int64)


def wait_tiers(jobs: list[PendingJob], now: float) -> np.ndarray:
    """The solver's priority for each job of one level: a tier per doubling of the hours it has waited
    (tier k: 2^k - 1 <= hours < 2^(k+1) - 1). The solver never leaves a job of a higher tier out where
    it would fit by taking room from lower tiers, so a job that waited far longer is never passed over
    (no starvation), while inside a tier it packs freely (small and short jobs fit around gangs). One
    tier per job (strict FIFO) measured worse in the twin, and slower: no two jobs merge into a class.
    Used with ``order="fifo"``."""
    waited = np.array([max(now - job.submitted_at, 0.0) for job in jobs]) / 3600.0
    return np.floor(np.log2(1.0 + waited)).astype(np.int64)


def _compatible(request: Request, index: PoolIndex, usage: Usage, *, now: float) -> np.ndarray:
    """Pools passing every hard filter but capacity and quota (the solver and the re-check handle
    those), narrowed to pools with room for the whole gang now."""
    trace, _ = run_filters(request, index, now=now, usage=usage)
    positions = trace.survivors_but_usage
    return positions[index.free_nodes(positions, usage) >= request.nodes]
