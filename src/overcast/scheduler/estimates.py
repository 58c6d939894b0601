"""Corrected runtime estimates: a team that under-states ``expected_hours`` must not keep jumping the queue.

The queue order (``queue.py``) puts the shorter ``expected_hours`` first, so a team writing 0.1 h on
40 h jobs would go first every time. We never kill a job for outrunning its estimate; instead each
team gets an **estimate factor** from what its recently finished jobs really ran: the 80th percentile
of (hours run / hours declared) over its finished jobs of the last ``WINDOW_DAYS``, **weighted by the
GPU-hours each ran**: 80% of the team's GPU time ran within ``factor`` times its estimate. Succeeded jobs
count as they ran; failed and cancelled ones only when they ran past their estimate (a job stopped
early says nothing about its full runtime, one that outran its estimate before it stopped does). Each
attempt's billed time carries its launch's provisioning, so ``PROVISIONING_HOURS`` is taken off it
first (else short honest jobs would look 2-3x late and inflate the team's long ones). Within 2x an
estimate is trusted as written (the twin's estimates, true runtimes rounded to a power of two, give
0.7-1.4), below ``MIN_SAMPLES`` jobs there is no evidence. The factor itself is not capped (a cap would
let a team declaring the minimum still go first); only the corrected hours are, by JobSpec's bound.

Why weighted, and why all of the window: an under-stated job harms the others for as long as it runs and
by as many GPUs as it holds (it jumped them), so a job's evidence counts by its GPU-hours: 400 h of
honest 1-GPU jobs do not outweigh 50 h of under-stated 64-GPU ones (3,200 GPU-hours), as they did
weighted by hours. The rule before last (the unweighted percentile of the team's last 50 jobs) could be
washed out: after 100 h of jobs declared at a tenth of their runtime, fifty 6-minute honest jobs (5 h)
pushed them out of the evidence and the next long jobs declared short went first again. Now no number of
jobs pushes anything out (there is no count limit; any limit by count is a hole, a 0-hour job costs
nothing), and honest jobs lower the factor only once they ran four times the under-stated GPU-hours
(80%); or the under-stated jobs age out of the window. With equal weights it is the plain nearest-rank
percentile, as before.

A pending job is ordered and priced as ``declared x factor``, and a requeued one by what is left:
- one that resumes (``checkpoint_dir``): ``max(declared x factor - hours already run, declared)``. Its
  budget already paid for the hours run, and the queue orders by the work to come: pricing it again
  for them would strand it on its budget. It is never taken as shorter than declared (how far it got
  is not known).
- one that restarts from zero: ``max(declared x factor, its longest attempt)``: it runs all of it
  again, and an attempt that ran that long shows it is at least that long.
Running jobs get ``declared x factor`` too (``control/snapshot.py``), so what the budget holds for them
and what consolidation weighs is what they would be priced at once pending again. The stored spec is
never changed.

Pure functions: the control loop feeds them from the store (``control/estimates.py``); the twin could
feed them from its own finished jobs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TypeVar

from overcast.scheduler.snapshot import PendingJob, RunningJob

QUANTILE = Fraction(4, 5)  # 80% of the team's run time ran at most this many times its estimate
TRUSTED = 2.0  # factors up to this are not applied: estimates within 2x are taken as written
MIN_SAMPLES = 5  # fewer finished jobs than this: no factor
WINDOW_DAYS = 30.0  # the team's finished jobs that ended within this many days, however many
# taken off each counted attempt's billed time (launched_at..ended_at), which starts when launch() is
# called: cloud provisioning takes 5-20 min before the job's own work begins
PROVISIONING_HOURS = 0.25
MAX_HOURS = 100_000.0  # JobSpec.expected_hours' bound

_MS_PER_HOUR = 3_600_000  # weighted_percentile's unit of weight

J = TypeVar("J", PendingJob, RunningJob)


def weighted_percentile(
    samples: Iterable[tuple[float, float]], quantile: Fraction = QUANTILE
) -> float | None:
    """The nearest-rank ``quantile`` of (value, weight) samples, weighted: the smallest value such that
    the samples at or below it carry at least ``quantile`` of the weight. None without weight.

    Weights are (GPU-)hours, counted in whole milliseconds so that the sums are exact integers: equal
    weights give exactly the unweighted nearest rank, and a sample added at or below the result never
    raises it (float sums could break those ties either way)."""
    ordered = sorted((value, round(weight * _MS_PER_HOUR)) for value, weight in samples)
    total = sum(w for _, w in ordered)
    if total <= 0:
        return None
    num, den = quantile.numerator, quantile.denominator
    seen = 0
    for value, w in ordered:
        seen += w
        if seen * den >= total * num:
            return value
    raise AssertionError("unreachable: the last sample carries the whole weight")


def estimate_factor(runs: Iterable[tuple[float, float]]) -> float:
    """The team's factor from its jobs' (hours run / hours declared, GPU-hours run): the 80th
    percentile of the ratios weighted by GPU-hours run, 1.0 when it is at most ``TRUSTED`` or fewer than
    ``MIN_SAMPLES`` jobs carry weight (jobs that ran nothing past the provisioning allowance weigh nothing,
    so four smoke tests and one job are one job's evidence, not five)."""
    valid = [(r, h) for r, h in runs if _non_negative(r) and _non_negative(h) and _weighs(h)]
    high = weighted_percentile(valid) if len(valid) >= MIN_SAMPLES else None
    return 1.0 if high is None or high <= TRUSTED else high


def _weighs(hours: float) -> bool:
    """Carries weight in ``weighted_percentile`` (at least a whole millisecond)."""
    return round(hours * _MS_PER_HOUR) > 0


def team_factors(runs: Mapping[str, Iterable[tuple[float, float]]]) -> dict[str, float]:
    """team -> factor (from its jobs' (ratio, GPU-hours run)), only the teams whose factor applies (> 1)."""
    factors = {team: estimate_factor(values) for team, values in runs.items()}
    return {team: f for team, f in factors.items() if f > 1.0}


@dataclass(frozen=True, slots=True)
class Correction:
    """Why a job is ordered as ``hours`` rather than its declared ``expected_hours``."""

    declared: float
    hours: float
    factor: float  # the team's factor (1.0: none)
    ran: float  # hours its earlier attempts already ran (0.0: none known)
    resumes: bool  # ``ran`` is work done (checkpointed), not work to do again

    def describe(self, team: str) -> str:
        """One line for the job's timeline."""
        if not self.resumes and self.ran >= self.declared * self.factor:
            why = f"it already ran {_h(self.ran)} (expected_hours {_h(self.declared)})"
        else:
            why = f"team {team}'s jobs ran {_x(self.factor)}x their expected_hours"
            if self.resumes and self.ran > 0:
                why += f", {_h(self.ran)} of it already run"
        return f"{why}: ordered as {_h(self.hours)}"


def correction(declared: float, factor: float, ran: float = 0.0, resumes: bool = False) -> Correction | None:
    """The corrected estimate (see the module doc), None when the declared one stands."""
    factor = max(factor, 1.0)
    full = declared * factor
    hours = max(full - ran, declared) if resumes else max(full, ran)
    hours = min(hours, MAX_HOURS)
    if not hours > declared:
        return None
    return Correction(declared, hours, factor, ran, resumes)


def as_written(declared: float) -> str:
    """The timeline's line when a job's correction ends (its team's factor fell back to 1)."""
    return f"estimate no longer corrected: ordered as written ({_h(declared)}) again"


def corrected(job: J, fix: Correction) -> J:
    """``job`` as decide() should see it: its spec's expected_hours replaced (a copy; the store's
    spec is untouched, and launches use the store's)."""
    return replace(job, spec=job.spec.model_copy(update={"expected_hours": fix.hours}))


def _non_negative(x: float) -> bool:
    """Finite and at least 0 (a NaN or an infinity from a bad record is no evidence)."""
    return math.isfinite(x) and x >= 0


def _h(hours: float) -> str:
    return f"{hours:.3g} h"


def _x(factor: float) -> str:
    return f"{factor:.3g}" if factor < 1000 else f"{factor:,.0f}"  # the real factor, not 4e+03
