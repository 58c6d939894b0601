"""Single-job placement of a list of jobs, one after the other, in the order given.

Used by decide() when few jobs are pending, and for whatever the batch solver left out.
"""

from __future__ import annotations

from overcast.placement import explain
from overcast.placement.filters import Request, request_key
from overcast.placement.index import PoolIndex, Usage
from overcast.placement.single import Candidate, place_job
from overcast.scheduler.burst import ListPriceGate
from overcast.scheduler.snapshot import PendingJob, Place


def place_in_order(
    jobs: list[PendingJob],
    index: PoolIndex,
    usage: Usage,
    *,
    now: float,
    misses: dict[tuple, str],
    gate: ListPriceGate | None = None,
) -> tuple[list[Place], list[tuple[PendingJob, str]]]:
    """Single-job placement, one job after the other. Mutates ``usage`` and ``misses`` (request key ->
    why it fits nowhere: capacity only shrinks within a cycle, so a later job asking the same misses too).
    ``gate``: the list-price pools a job may start on (burst limit, team budgets: ``burst.py``); a job
    whose best pool it refuses takes the best pool it allows, or waits with the refusal's reason."""
    placed: list[Place] = []
    unplaced: list[tuple[PendingJob, str]] = []
    # (job shape, team, avoided pools) -> (position, cost) the gate refused with no allowed pool left:
    # room and budgets only shrink within a cycle, so a later job of that shape is refused too
    refused: dict[tuple, tuple[int, float]] = {}
    for job in jobs:
        key = request_key(job.spec)
        if key in misses:
            unplaced.append((job, misses[key]))
            continue
        shape = None
        if gate is not None and gate.restricted(job, index):
            spec = job.spec
            shape = (key, spec.expected_hours, bool(spec.checkpoint_dir), spec.team, job.avoid_pools)
            if shape in refused:
                unplaced.append((job, _why(gate, job, index, *refused[shape])))
                continue
        result = place_job(
            job.spec, index, now=now, usage=usage, avoid=job.avoid_pools, top=1, explain_ranks=False
        )
        best = result.best
        if best is None:
            misses[key] = result.summary()
            unplaced.append((job, misses[key]))
            continue
        if shape is not None and gate is not None:
            why = gate.why_not(job, index, best.position, best.expected_cost)
            if why is not None:
                allowed = _best_allowed(job, index, usage, now, gate, why)
                if allowed is None:  # not a miss: a smaller job, or another team's, may go
                    refused[shape] = (best.position, best.expected_cost)
                    unplaced.append((job, why))
                    continue
                best = allowed
            gate.took(job, index, best.position, best.expected_cost)
        usage.take(index, best.position, best.nodes)
        placed.append(Place(job.id, best.pool.id, best.nodes, best.reason))
    return placed, unplaced


def _best_allowed(
    job: PendingJob, index: PoolIndex, usage: Usage, now: float, gate: ListPriceGate, why: str
) -> Candidate | None:
    """The best-ranked pool the gate allows (a reservation ranked below a preferred list-price pool,
    say), its reason saying why it is not #1; None when the gate allows none."""
    result = place_job(
        job.spec,
        index,
        now=now,
        usage=usage,
        avoid=job.avoid_pools,
        top=len(index.pools),
        explain_ranks=False,
    )
    for rank, cand in enumerate(result.ranked[1:], start=2):
        if gate.why_not(job, index, cand.position, cand.expected_cost) is None:
            request, ordered = Request.of(job.spec), job.spec.resources.ordered
            cand.reason = (
                f"{explain.candidate_reason(cand, rank, result.ranked[0], request, ordered)}; #1 not: {why}"
            )
            return cand
    return None


def _why(gate: ListPriceGate, job: PendingJob, index: PoolIndex, position: int, cost: float) -> str:
    return gate.why_not(job, index, position, cost) or "refused by the list-price rules"
