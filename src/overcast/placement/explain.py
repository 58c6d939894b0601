"""Explanations: why each candidate ranks where it does, and why each provider got nothing.

Worked out only when asked (a placed job in a scheduler cycle never pays for them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from overcast.placement.filters import FilterTrace, Request
from overcast.placement.index import PoolIndex
from overcast.placement.pool import Pool, Purchase

if TYPE_CHECKING:
    from overcast.placement.single import Candidate


def provider_exclusions(
    request: Request, index: PoolIndex, trace: FilterTrace, avoided: np.ndarray | None = None
) -> dict[str, str]:
    """provider -> why none of its pools survived (the step that removed its last candidate, with counts).

    Providers that still have a candidate are left out. ``avoided``: positions dropped by the soft
    ``avoid_pools`` rule after the hard filters.
    """
    res = request.job.resources
    survivors = np.bincount(index.provider[trace.survivors], minlength=len(index.providers.names))
    if avoided is not None and len(avoided):
        survivors = survivors - np.bincount(index.provider[avoided], minlength=len(survivors))
    out: dict[str, str] = {}
    for code, provider in enumerate(index.providers.names):
        if survivors[code] > 0:
            continue
        if provider in index.disabled_providers:
            out[provider] = "provider disabled"
        elif res.providers and provider not in res.providers:
            out[provider] = f"not in resources.providers ({', '.join(res.providers)})"
        elif provider in res.deny_providers:
            out[provider] = "denied by resources.deny_providers"
        else:
            out[provider] = _first_failing_step(request, index, trace, code, avoided)
    return out


def _first_failing_step(
    request: Request, index: PoolIndex, trace: FilterTrace, code: int, avoided: np.ndarray | None
) -> str:
    before = trace.start[index.provider[trace.start] == code]
    if len(before) == 0:
        return f"no pool offers {request.accelerator_names()}"
    what = request.accelerator_names()
    for name, clause, after in trace.steps:
        mine = after[index.provider[after] == code]
        if len(mine) == 0:
            return f"{_pools(len(before))} {what} but none {clause(before)}"
        before = mine
        if name == "count":
            what = request.describe()
    return f"{len(before)} fitting pool(s), all in the job's avoid_pools (they just failed it)"


def _pools(n: int) -> str:
    return f"{n} pool offers" if n == 1 else f"{n:,} pools offer"


def candidate_reason(
    candidate: Candidate, rank: int, best: Candidate, request: Request, ordered: bool
) -> str:
    """One line: why this candidate sits at this rank."""
    pool = candidate.pool
    what = (str(candidate.accelerator) if candidate.accelerator else "CPU-only") + (
        f" x{candidate.nodes} nodes" if candidate.nodes > 1 else ""
    )
    head = f"{'cheapest ' if rank == 1 else ''}{what} {pool.purchase.value} in {location(pool)}"
    if ordered and len(request.alternatives) > 1:
        head += f" (preference #{candidate.preference + 1})"
    parts = [head]
    if rank > 1:
        extra = candidate.expected_cost - best.expected_cost
        if abs(extra) >= 0.005:  # negative only when an earlier preference (resources.ordered) won
            parts.append(f"{'+' if extra > 0 else '-'}${abs(extra):,.2f} expected vs #1")
        elif candidate.hourly_cost > best.hourly_cost:
            parts.append("same expected cost as #1, higher list price")
        else:
            parts.append("same expected cost and list price as #1")
    if pool.purchase is Purchase.RESERVED:
        parts.append(f"reserved capacity free (list ${candidate.hourly_cost:,.2f}/h)")
    elif candidate.risk_factor > 1.0:
        parts.append(
            f"${candidate.marginal_hourly_cost:,.2f}/h, +{(candidate.risk_factor - 1) * 100:.0f}% for "
            f"preemption risk ({pool.preemptions_per_hour:g}/h)"
        )
    else:
        parts.append(f"${candidate.marginal_hourly_cost:,.2f}/h")
    if pool.capacity_nodes is not None:
        parts.append(f"{candidate.free_nodes:g} free")
    return "; ".join(parts)


def location(pool: Pool) -> str:
    """provider/region/zone; a cluster named after itself (region = provider) is named once."""
    parts = (pool.provider, None if pool.region == pool.provider else pool.region, pool.zone)
    return "/".join(p for p in parts if p)


def candidate_note(candidate: Candidate, rank: int) -> str:
    """The part of the reason a price table does not already show."""
    pool = candidate.pool
    notes = ["cheapest"] if rank == 1 else []
    if pool.purchase is Purchase.RESERVED:
        notes.append("reserved: already paid")
    elif candidate.risk_factor > 1.0:
        notes.append(f"+{(candidate.risk_factor - 1) * 100:.0f}% preemption risk")
    if pool.capacity_nodes is not None:
        notes.append(f"{candidate.free_nodes:g} free")
    return ", ".join(notes)
