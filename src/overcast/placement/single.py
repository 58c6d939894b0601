"""Single-job placement: filter -> score -> select, with the reason for every rank.

    result = place_job(job, PoolIndex.build(pools), now=time.time())
    result.ranked[0].pool      # best pool, or result.ranked == [] and result.why_not() says why

Nomad-style chain: hard filters (``filters``) narrow the pools offering the requested accelerators;
``score`` prices each survivor by expected cost; the top N are kept and explained (``explain``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from overcast.placement import explain, score
from overcast.placement.filters import FilterTrace, Request, run_filters
from overcast.placement.index import PoolIndex, Usage
from overcast.placement.pool import Pool
from overcast.spec.models import AcceleratorRequest, JobSpec


@dataclass(slots=True)
class Candidate:
    pool: Pool
    position: int  # in the PoolIndex
    nodes: int
    accelerator: AcceleratorRequest | None  # the alternative this pool serves; None for CPU only
    preference: int  # index of that alternative in the request
    hourly_cost: float  # nodes x list price (what accounting charges)
    marginal_hourly_cost: float  # nodes x what one more node-hour costs now (0 when reserved)
    risk_factor: float  # 1 + expected extra hours per hour from preemptions
    expected_cost: float  # marginal_hourly_cost x expected_hours x risk_factor
    free_nodes: float  # before this job; inf when unlimited
    reason: str = ""


@dataclass(eq=False)
class PlacementResult:
    job: JobSpec
    ranked: list[Candidate]
    feasible: int  # how many pools passed every filter
    _request: Request = field(repr=False)
    _index: PoolIndex = field(repr=False)
    _trace: FilterTrace = field(repr=False)
    _avoided: np.ndarray | None = field(default=None, repr=False)

    @property
    def best(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    @cached_property
    def excluded(self) -> dict[str, str]:
        """provider -> why it offers no candidate (the filter that removed its last pool, with counts)."""
        return explain.provider_exclusions(self._request, self._index, self._trace, self._avoided)

    def why_not(self) -> str:
        """Multi-line explanation of an unplaceable job ("" when it was placed)."""
        if self.ranked:
            return ""
        head = f"no pool fits {self.job.name} ({self.job.num_nodes} x {self._request.describe()})"
        if not self.excluded:
            return head + ": the catalog has no pools"
        lines = [f"  {provider}: {why}" for provider, why in sorted(self.excluded.items())]
        return "\n".join([head + ":", *lines])

    def summary(self) -> str:
        """One line for logs and scheduler decisions."""
        if self.ranked:
            return self.ranked[0].reason
        reasons = "; ".join(f"{p}: {w}" for p, w in sorted(self.excluded.items()))
        return f"no pool fits: {reasons}" if reasons else "no pool fits: no pools"


def place_job(
    job: JobSpec,
    index: PoolIndex,
    *,
    now: float,
    usage: Usage | None = None,
    avoid: frozenset[str] = frozenset(),
    top: int = 10,
    explain_ranks: bool = True,
) -> PlacementResult:
    """Rank the pools that can take ``job`` now, best first (at most ``top``).

    ``usage``: nodes and quota already taken in this cycle by earlier placements. ``avoid``: pool ids
    that just failed this job; used only when no other pool fits. ``explain_ranks=False`` skips the
    per-candidate reason text (the scheduler only needs the winner's).
    """
    request = Request.of(job)
    trace, alternative = run_filters(request, index, now=now, usage=usage)
    positions = trace.survivors
    avoided = None
    if avoid and len(positions):
        avoid_pos = [index.position_of[p] for p in avoid if p in index.position_of]
        hit = np.isin(positions, avoid_pos)
        if hit.any() and not hit.all():
            avoided = positions[hit]
            positions, alternative = positions[~hit], alternative[~hit]
    cost = score.expected_cost(index, positions, job)
    order = score.rank(index, positions, alternative, cost, ordered=job.resources.ordered)[: max(top, 0)]
    ranked = [_candidate(request, index, positions[i], alternative[i], cost[i], usage) for i in order]
    if explain_ranks:
        for rank, cand in enumerate(ranked, start=1):
            cand.reason = explain.candidate_reason(cand, rank, ranked[0], request, job.resources.ordered)
    elif ranked:
        ranked[0].reason = explain.candidate_reason(ranked[0], 1, ranked[0], request, job.resources.ordered)
    return PlacementResult(job, ranked, len(positions), request, index, trace, avoided)


def _candidate(
    request: Request, index: PoolIndex, position: int, alternative: int, cost: float, usage: Usage | None
) -> Candidate:
    job = request.job
    nodes = job.num_nodes
    pos = np.array([position])
    return Candidate(
        pool=index.pools[position],
        position=int(position),
        nodes=nodes,
        accelerator=request.alternatives[alternative] if request.alternatives else None,
        preference=int(alternative),
        hourly_cost=float(index.price[position]) * nodes,
        marginal_hourly_cost=float(index.marginal[position]) * nodes,
        risk_factor=float(score.risk_factor(index, pos, job)[0]),
        expected_cost=float(cost),
        free_nodes=max(float(index.free_nodes(pos, usage)[0]), 0.0),
    )
