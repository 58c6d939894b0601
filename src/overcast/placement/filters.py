"""Filter: which pools can take a job at all (hard constraints), as a chain of vectorised steps.

Each step narrows an array of pool positions and is recorded with a clause that says what it demanded,
so that an empty result can be explained per provider ("aws: 212 pools offer H100 but none with 64 per
node") without slowing down the common case: explanations are only worked out when asked for.

The chain, in order: provider (disabled, allow list, deny list) -> accelerator -> GPUs per node ->
instance type -> regions -> deny_regions -> zones -> vCPUs -> memory -> spot policy -> max price ->
health now -> free nodes for the whole gang in one pool -> quotas. ``avoid_pools`` is soft and applied
afterwards by ``single.place_job``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from overcast.placement.index import PoolIndex, Usage
from overcast.spec.models import AcceleratorRequest, JobSpec, SpotPolicy

SPOT = 2  # index.PURCHASE_CODES[Purchase.SPOT]
USAGE_STEPS = ("capacity", "quota")  # the last steps, run on each call against the Usage overlay


@dataclass(frozen=True, slots=True)
class Request:
    """What a job asks of one pool, with its accelerator alternatives de-duplicated."""

    alternatives: tuple[AcceleratorRequest, ...]  # empty: CPU only
    nodes: int
    job: JobSpec

    @classmethod
    def of(cls, job: JobSpec) -> Request:
        seen: dict[tuple[str, int], AcceleratorRequest] = {}
        for alt in job.resources.accelerators:
            seen.setdefault((alt.name.lower(), alt.count), alt)
        return cls(alternatives=tuple(seen.values()), nodes=job.num_nodes, job=job)

    def describe(self) -> str:
        if not self.alternatives:
            return "CPU-only nodes"
        return " or ".join(str(a) for a in self.alternatives)

    def accelerator_names(self) -> str:
        if not self.alternatives:
            return "CPU-only nodes"
        return " or ".join(dict.fromkeys(a.name for a in self.alternatives))


# A clause renders "none <clause>" from the positions (of one provider) that reached the step.
Clause = Callable[[np.ndarray], str]


@dataclass(slots=True)
class FilterTrace:
    """Positions before the first step and after each step, with the step's clause."""

    start: np.ndarray
    steps: list[tuple[str, Clause, np.ndarray]]  # (step name, clause, positions after the step)

    @property
    def survivors(self) -> np.ndarray:
        return self.steps[-1][2] if self.steps else self.start

    @property
    def survivors_but_usage(self) -> np.ndarray:
        """Positions that pass every filter except free capacity and quota (what preemption can free)."""
        positions = self.start
        for name, _, after in self.steps:
            if name in USAGE_STEPS:
                break
            positions = after
        return positions


def request_key(job: JobSpec) -> tuple:
    """Everything the filters read from a job, as a plain tuple: jobs with equal keys fit the same
    pools. Hashing pydantic models field by field on every lookup costs more than placing a job."""
    res = job.resources
    fields = tuple(v for k, v in res.__dict__.items() if k != "accelerators")
    return (tuple((a.name, a.count) for a in res.accelerators), fields, job.num_nodes)


def candidates(request: Request, index: PoolIndex) -> tuple[np.ndarray, np.ndarray]:
    """Positions of pools offering any requested accelerator, and which alternative each serves."""
    names = [a.name for a in request.alternatives] or [""]
    ranges = [index.positions(name) for name in names]
    if len(ranges) == 1:
        start, stop = ranges[0]
        return np.arange(start, stop), np.zeros(stop - start, dtype=np.int64)
    positions = np.concatenate([np.arange(a, b) for a, b in ranges])
    alternative = np.concatenate([np.full(b - a, i) for i, (a, b) in enumerate(ranges)])
    return positions, alternative


def run_filters(
    request: Request,
    index: PoolIndex,
    *,
    now: float,
    usage: Usage | None = None,
) -> tuple[FilterTrace, np.ndarray]:
    """Apply the hard filters. Returns the trace and, for the survivors, which alternative each serves.

    Everything up to health depends only on the request and ``now``, so it is worked out once per
    index for each (request_key, now) and reused: a scheduler cycle asks the same few shapes
    again and again. Only free capacity and quotas are evaluated per call, against ``usage``.
    """
    key = (request_key(request.job), now)
    cached = index.filter_cache.get(key)
    if cached is None:
        cached = index.filter_cache[key] = _static_filters(request, index, now)
    start, static_steps, positions, alternative = cached
    trace = FilterTrace(start=start, steps=list(static_steps))

    def step(name: str, mask: np.ndarray, clause: Clause) -> None:
        nonlocal positions, alternative
        positions, alternative = positions[mask], alternative[mask]
        trace.steps.append((name, clause, positions))

    step(
        "capacity",
        index.free_nodes(positions, usage) >= request.nodes,
        lambda p: _capacity_clause(index, p, request, usage),
    )
    if index.quotas:
        need = index.gpus[positions] * request.nodes
        step(
            "quota",
            index.quota_gpus_left(positions, usage) >= need,
            lambda p: _quota_clause(index, p, request, usage),
        )
    return trace, alternative


def _static_filters(request: Request, index: PoolIndex, now: float):
    """The filters that do not depend on usage: (start positions, steps, survivors, alternative)."""
    res = request.job.resources
    positions, alternative = candidates(request, index)
    trace = FilterTrace(start=positions, steps=[])

    def step(name: str, mask: np.ndarray, clause: Clause) -> None:
        nonlocal positions, alternative
        positions, alternative = positions[mask], alternative[mask]
        trace.steps.append((name, clause, positions))

    ok = index.providers.table(index.providers.names)
    ok &= ~index.providers.table(index.disabled_providers)
    if res.providers:
        ok &= index.providers.table(res.providers)
    ok &= ~index.providers.table(res.deny_providers)
    step("provider", ok[index.provider[positions]], lambda _: "from an allowed provider")

    if request.alternatives:
        counts = np.array([a.count for a in request.alternatives])
        per_node = " or ".join(sorted({str(a.count) for a in request.alternatives}))
        step("count", index.gpus[positions] == counts[alternative], lambda _: f"with {per_node} per node")
    if res.instance_type:
        table = index.instance_types.table([res.instance_type])
        step(
            "instance_type",
            table[index.instance_type[positions]],
            lambda _: f"of instance type {res.instance_type}",
        )
    if res.regions:
        table = index.regions.table(res.regions)
        step(
            "regions",
            table[index.region[positions]],
            lambda _: f"in resources.regions ({', '.join(res.regions)})",
        )
    if res.deny_regions:
        table = index.regions.table(res.deny_regions)
        step("deny_regions", ~table[index.region[positions]], lambda _: "outside resources.deny_regions")
    if res.zones:
        table = index.zones.table(res.zones)
        step("zones", table[index.zone[positions]], lambda _: f"in resources.zones ({', '.join(res.zones)})")
    if res.cpus is not None:
        vcpus = index.vcpus[positions]
        step("cpus", np.isnan(vcpus) | (vcpus >= res.cpus), lambda _: f"with {res.cpus:g}+ vCPUs per node")
    if res.memory_gib is not None:
        mem = index.memory_gib[positions]
        step(
            "memory",
            np.isnan(mem) | (mem >= res.memory_gib),
            lambda _: f"with {res.memory_gib:g}+ GiB memory per node",
        )
    if res.spot is SpotPolicy.NEVER:
        step("spot", index.purchase[positions] != SPOT, lambda _: "reserved or on-demand (spot: never)")
    elif res.spot is SpotPolicy.REQUIRED:
        step("spot", index.purchase[positions] == SPOT, lambda _: "offered as spot (spot: required)")
    if res.max_price_per_hour is not None:
        cap = res.max_price_per_hour
        step(
            "max_price",
            index.marginal[positions] * request.nodes <= cap,
            lambda p: _price_clause(index, p, request, cap),
        )
    step("health", index.usable(positions, now), lambda p: _health_clause(index, p, now))
    return trace.start, trace.steps, positions, alternative


def _price_clause(index: PoolIndex, positions: np.ndarray, request: Request, cap: float) -> str:
    cheapest = float(index.marginal[positions].min()) * request.nodes
    return f"within max_price_per_hour ${cap:,.2f} for {request.nodes} node(s) (cheapest ${cheapest:,.2f}/h)"


def _health_clause(index: PoolIndex, positions: np.ndarray, now: float) -> str:
    health = index.health[positions]
    down = int((health == 2).sum())
    cooling = len(positions) - down
    return f"healthy now ({cooling} out of capacity, {down} down)"


def _capacity_clause(index: PoolIndex, positions: np.ndarray, request: Request, usage: Usage | None) -> str:
    most = max(float(index.free_nodes(positions, usage).max()), 0.0)
    return f"with {request.nodes} free node(s) in one pool (most free: {most:g})"


def _quota_clause(index: PoolIndex, positions: np.ndarray, request: Request, usage: Usage | None) -> str:
    need = int((index.gpus[positions] * request.nodes).min())
    most = float(index.quota_gpus_left(positions, usage).max())
    return f"within its provider/region GPU quota (needs {need} GPUs, at most {max(most, 0):g} left)"
