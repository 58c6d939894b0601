"""Corrected runtime estimates: a team that under-states ``expected_hours`` must not keep jumping the queue.

The queue order (``queue.py``) puts the shorter ``expected_hours`` first, so a team writing 0.1 h on
40 h jobs would go first every time. We never kill a job for outrunning its estimate; instead each
team gets an **estimate factor** from what its recently finished jobs really ran: the 80th percentile
of (hours run / hours declared) over its last ``MAX_SAMPLES`` succeeded jobs. Within 2x an estimate is
trusted as written (the twin's estimates, true runtimes rounded to a power of two, give 0.7-1.4),
below ``MIN_SAMPLES`` jobs there is no evidence, and the factor is capped. A pending job is then
ordered and priced as ``max(declared x factor, hours it already ran)``: a requeued job that ran past
its estimate does not count as short either. The stored spec is never changed.

Pure functions: the control loop feeds them from the store (``control/estimates.py``); the twin could
feed them from its own finished jobs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from overcast.scheduler.snapshot import PendingJob

QUANTILE = 0.8  # most of the team's jobs ran at most this many times their estimate
TRUSTED = 2.0  # factors up to this are not applied: estimates within 2x are taken as written
MIN_SAMPLES = 5  # fewer finished jobs than this: no factor
MAX_SAMPLES = 50  # the team's most recent succeeded jobs
WINDOW_DAYS = 30.0  # ... that ended within this many days
CAP = 100.0  # at most this factor: one absurd estimate must not rank a job behind everything forever
MAX_HOURS = 100_000.0  # JobSpec.expected_hours' bound


def estimate_factor(ratios: Iterable[float]) -> float:
    """The team's factor from its jobs' (hours run / hours declared): the nearest-rank 80th percentile,
    1.0 when it is at most ``TRUSTED`` or there are fewer than ``MIN_SAMPLES`` ratios; at most ``CAP``."""
    ordered = sorted(r for r in ratios if math.isfinite(r) and r >= 0)
    if len(ordered) < MIN_SAMPLES:
        return 1.0
    high = ordered[math.ceil(QUANTILE * len(ordered)) - 1]
    return 1.0 if high <= TRUSTED else min(high, CAP)


def team_factors(ratios: Mapping[str, Iterable[float]]) -> dict[str, float]:
    """team -> factor, only the teams whose factor applies (> 1)."""
    factors = {team: estimate_factor(values) for team, values in ratios.items()}
    return {team: f for team, f in factors.items() if f > 1.0}


@dataclass(frozen=True, slots=True)
class Correction:
    """Why a pending job is ordered as ``hours`` rather than its declared ``expected_hours``."""

    declared: float
    hours: float
    factor: float  # the team's factor (1.0: none)
    ran: float  # hours its earlier attempts already ran (0.0: none known)

    def describe(self, team: str) -> str:
        """One line for the job's timeline."""
        if self.hours == self.ran:
            why = f"it already ran {_h(self.ran)} (expected_hours {_h(self.declared)})"
        else:
            why = f"team {team}'s jobs ran {self.factor:.3g}x their expected_hours"
        return f"{why}: ordered as {_h(self.hours)}"


def correction(declared: float, factor: float, ran: float = 0.0) -> Correction | None:
    """The corrected estimate, None when the declared one stands."""
    hours = min(max(declared * max(factor, 1.0), ran), MAX_HOURS)
    if not hours > declared:
        return None
    return Correction(declared, hours, max(factor, 1.0), ran)


def corrected(job: PendingJob, fix: Correction) -> PendingJob:
    """``job`` as decide() should see it: its spec's expected_hours replaced (a copy; the store's
    spec is untouched, and launches use the store's)."""
    return replace(job, spec=job.spec.model_copy(update={"expected_hours": fix.hours}))


def _h(hours: float) -> str:
    return f"{hours:.3g} h"
