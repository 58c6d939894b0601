"""Trace jobs and the rules that turn an old cluster trace into a modern lab's demand.

GPU mapping rule (documented in docs/twin.md): a trace job that used ``g`` old GPUs (K80/P100/V100/T4,
fractional GPUs rounded up) becomes a job of ``ceil(g * gpu_scale / gpus_per_node)`` whole nodes of the
scenario's modern accelerator. With the default ``gpu_scale = 8`` one 2017 V100 becomes one 8-GPU H100
node: models grew faster than GPUs, and clouds rent H100s by the 8-GPU node. Runtimes are kept as
measured (divided by ``speedup``, 1 by default), so a trace's GPU-hours shape is preserved.

Scaling rule: ``scale_jobs`` resamples the trace to a target job count over the scenario's duration:
arrival times are the trace's own (compressed into the duration when the trace is longer), each extra
copy of the trace shifted by a seeded random offset, the last partial copy a uniform sample, so the
burstiness of the real arrivals survives while the rate grows or shrinks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class TraceJob:
    name: str
    submit: float  # seconds from trace start
    gpus: float  # GPUs the job used in its trace (fractional for shared GPUs)
    duration: float  # seconds of work on its trace's hardware
    team: str = "default"


@dataclass(frozen=True, slots=True)
class SimJob:
    """A job as the twin runs it: whole nodes of one modern accelerator."""

    id: str
    submit: float
    nodes: int
    work: float  # seconds of work at full speed
    team: str
    spot_ok: bool
    priority: int = 0


def to_nodes(gpus: float, gpu_scale: float, gpus_per_node: int) -> int:
    return max(1, math.ceil(max(gpus, 1e-9) * gpu_scale / gpus_per_node - 1e-9))


def scale_jobs(
    jobs: list[TraceJob], target: int, duration: float, rng: np.random.Generator
) -> list[TraceJob]:
    """Resample ``jobs`` to ``target`` jobs arriving within ``duration`` seconds (see module doc)."""
    if not jobs:
        raise ValueError("the workload trace has no jobs")
    submits = np.array([j.submit for j in jobs], dtype=float)
    # a few stragglers long before the bulk (the Alibaba trace has 1% of pods in its first 100 days)
    # would stretch the window: the trace starts at its 1st percentile, earlier jobs arrive then
    start = float(np.percentile(submits, 1))
    submits = np.maximum(submits, start) - start
    span = max(float(submits.max()), 1.0)
    # fold the trace into the window: compress when the trace is longer than the simulation
    base = submits * min(1.0, duration / span)
    copies = math.ceil(target / len(jobs))
    out: list[TraceJob] = []
    for copy in range(copies):
        offset = 0.0 if copy == 0 else float(rng.uniform(0, duration))
        left = target - len(out)
        # the last (partial) copy is a uniform sample, so a down-scaled trace keeps its whole time shape
        picked = (
            range(len(jobs)) if left >= len(jobs) else np.sort(rng.choice(len(jobs), left, replace=False))
        )
        for i in picked:
            j = jobs[i]
            t = (base[i] + offset) % duration
            out.append(TraceJob(f"{j.name}#{copy}" if copy else j.name, float(t), j.gpus, j.duration, j.team))
    out.sort(key=lambda j: (j.submit, j.name))
    return out


def to_sim_jobs(
    jobs: list[TraceJob],
    *,
    gpu_scale: float,
    gpus_per_node: int,
    speedup: float,
    spot_fraction: float,
    max_hours: float | None,
    max_nodes: int | None = None,
    teams: list[str] | None,
    rng: np.random.Generator,
) -> list[SimJob]:
    """Apply the GPU mapping rule; jobs get stable ids ``j000001``... in arrival order."""
    spot_draw = rng.random(len(jobs))
    out = []
    for i, j in enumerate(jobs):
        work = j.duration / speedup
        if max_hours is not None:
            work = min(work, max_hours * 3600.0)
        team = teams[hash_team(j.team, len(teams))] if teams else j.team
        out.append(
            SimJob(
                id=f"j{i + 1:07d}",
                submit=j.submit,
                nodes=min(to_nodes(j.gpus, gpu_scale, gpus_per_node), max_nodes or 1 << 30),
                work=max(work, 60.0),
                team=team,
                spot_ok=bool(spot_draw[i] < spot_fraction),
            )
        )
    return out


def hash_team(label: str, n: int) -> int:
    """A stable (not Python-hash-seeded) team index for a trace label."""
    return sum(label.encode()) % n
