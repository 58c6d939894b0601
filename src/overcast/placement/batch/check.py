"""Independent checker: every solution is verified here before it is returned.

It reads only the original ``BatchProblem`` (not the class model or any solver state) and reports each
violated rule in words. A pair whose cost is at least the job's penalty never pays off and counts as
incompatible (the objective would never choose it; under the priority rule it could otherwise be used
to park a high-priority job at a loss). One pool index per job means a job is placed at most once and
its whole gang sits in that one pool, so those two rules hold by representation; the array itself is
checked.

Priority rule: a job j left out must not fit in any pool p that pays off for it (cost < penalty) even if
every job of lower priority were removed from p, i.e. ``free_p + lower_priority_usage_p < nodes_j``.
"""

from __future__ import annotations

import numpy as np

from overcast.placement.batch.problem import BatchProblem


class InvalidSolution(RuntimeError):
    """A solution broke a rule; the message lists the violations."""


def check_solution(
    problem: BatchProblem, assignment: np.ndarray, objective: float | None = None, *, rtol: float = 1e-7
) -> list[str]:
    """Return the list of violated rules (empty when the solution is valid)."""
    a = np.asarray(assignment)
    errors: list[str] = []
    if a.shape != (problem.n_jobs,):
        return [f"assignment has shape {a.shape}, expected ({problem.n_jobs},)"]
    if a.size and not np.issubdtype(a.dtype, np.integer):
        return [f"assignment must hold integers, got dtype {a.dtype}"]
    a = a.astype(np.int64)
    out = (a < -1) | (a >= problem.n_pools)
    if np.any(out):
        j = int(np.flatnonzero(out)[0])
        return [f"job {j} has pool index {a[j]}, outside [-1, {problem.n_pools})"]
    placed = np.flatnonzero(a >= 0)
    pair = problem.pair_index(placed, a[placed])
    if np.any(pair < 0):
        bad = placed[pair < 0]
        errors.append(
            f"{bad.size} job(s) placed in incompatible pools, e.g. job {bad[0]} in pool {a[bad[0]]}"
        )
    else:
        loss = problem.compat_cost[pair] >= problem.job_penalty[placed]
        if np.any(loss):
            j = int(placed[loss][0])
            errors.append(
                f"{int(loss.sum())} job(s) placed where they cost at least their penalty, e.g. job {j} "
                f"in pool {a[j]}: such a pair never pays off and counts as incompatible"
            )
    used = np.bincount(a[placed], weights=problem.job_nodes[placed], minlength=problem.n_pools)
    over = used > problem.pool_capacity + 1e-9
    if np.any(over):
        p = int(np.flatnonzero(over)[0])
        cap = problem.pool_capacity[p]
        errors.append(f"{int(over.sum())} pool(s) over capacity, e.g. pool {p}: {used[p]:g} > {cap:g}")
    if not errors:
        errors += _priority_violations(problem, a, used)
        if objective is not None:
            true = problem.objective(a)
            if abs(true - objective) > rtol * max(1.0, abs(true)):
                errors.append(f"reported objective {objective!r} differs from recomputed {true!r}")
    return errors


def _priority_violations(problem: BatchProblem, a: np.ndarray, used: np.ndarray) -> list[str]:
    levels, rank = np.unique(problem.job_priority, return_inverse=True)
    if levels.size <= 1:
        # One level: the rule reduces to "no left-out job fits in free room where it pays off".
        rank = np.zeros(problem.n_jobs, dtype=np.int64)
    n_levels = max(int(levels.size), 1)
    placed = np.flatnonzero(a >= 0)
    # Nodes used per (pool, priority rank), as a sorted key list with a running sum.
    keys = a[placed] * n_levels + rank[placed]
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    run = np.concatenate(([0.0], np.cumsum(problem.job_nodes[placed][order].astype(np.float64))))
    rows = problem.pair_rows()
    pools = problem.compat_pool
    cand = (
        (a[rows] < 0)
        & (problem.compat_cost < problem.job_penalty[rows])
        & (problem.pool_capacity[pools] >= problem.job_nodes[rows])
    )
    j, p = rows[cand], pools[cand]
    lower = run[np.searchsorted(keys, p * n_levels + rank[j])] - run[np.searchsorted(keys, p * n_levels)]
    free = problem.pool_capacity[p] - used[p]
    bad = free + lower >= problem.job_nodes[j] - 1e-9
    if not np.any(bad):
        return []
    k = int(np.flatnonzero(bad)[0])
    return [
        f"{int(bad.sum())} priority/maximality violation(s), e.g. job {j[k]} (priority "
        f"{problem.job_priority[j[k]]}, {problem.job_nodes[j[k]]} nodes) is left out but pool {p[k]} has "
        f"{free[k]:g} free nodes plus {lower[k]:g} used by lower-priority jobs"
    ]


def assert_valid(problem: BatchProblem, assignment: np.ndarray, objective: float | None = None) -> None:
    errors = check_solution(problem, assignment, objective)
    if errors:
        raise InvalidSolution("; ".join(errors))
