"""Step (c) of a tick, continued: pending jobs as decide() sees them, with corrected runtime estimates
(``scheduler/estimates.py``). The teams' factors come from one query over their finished jobs, read at
most every ``ttl`` seconds; the hours requeued jobs already ran, from one query per tick, only while
such a job waits. Each correction is told once on the job's timeline (an ``estimate`` event)."""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from overcast.scheduler.estimates import (
    MAX_SAMPLES,
    WINDOW_DAYS,
    Correction,
    corrected,
    correction,
    team_factors,
)
from overcast.scheduler.snapshot import PendingJob
from overcast.spec.models import JobSpec
from overcast.store import Store

ESTIMATE_CACHE_S = 60.0  # the teams' factors are read at most this often


class EstimateCache:
    def __init__(self, ttl: float = ESTIMATE_CACHE_S) -> None:
        self.ttl = ttl
        self._read_at: float | None = None
        self._factors: dict[str, float] = {}
        self._fixed: dict[str, _Fixed] = {}  # job id -> its correction last tick

    def factors(self, store: Store, now: float) -> dict[str, float]:
        """team -> estimate factor, for the teams that have one (> 1)."""
        read_at = self._read_at
        if read_at is None or not 0 <= now - read_at < self.ttl:
            ratios = store.finished_ratios(now, days=WINDOW_DAYS, per_team=MAX_SAMPLES)
            self._factors = team_factors(ratios)
            self._read_at = now
        return self._factors

    def correct(self, store: Store, now: float, pending: list[PendingJob]) -> list[PendingJob]:
        """``pending`` with each job's expected_hours as the queue should order and price it."""
        factors = self.factors(store, now)
        ran = store.pending_run_hours() if any(job.attempt > 0 for job in pending) else {}
        out: list[PendingJob] = []
        fixed: dict[str, _Fixed] = {}
        told: list[tuple[str, str, str]] = []
        for job in pending:
            spec = job.spec
            hours = ran.get(job.id)
            # a resuming job's attempts add up to what it ran; one that restarts from zero is at least
            # as long as its longest attempt
            already = 0.0 if hours is None else hours.total if spec.checkpoint_dir else hours.longest
            fix = correction(spec.expected_hours, factors.get(spec.team, 1.0), already)
            if fix is None:
                out.append(job)
                continue
            last = self._fixed.get(job.id)
            if last is None or last.fix != fix:  # a job's spec never changes: its copy is reused
                line = fix.describe(spec.team)
                if last is None or last.line != line:
                    told.append((job.id, spec.team, line))
                last = _Fixed(fix, corrected(job, fix).spec, line)
            fixed[job.id] = last
            out.append(replace(job, spec=last.spec))
        if told:  # one transaction: a team's whole backlog can be corrected at once
            store.add_job_events("estimate", told, at=now)
        self._fixed = fixed
        return out


class _Fixed(NamedTuple):
    """A job's correction, its corrected spec and the line told on its timeline."""

    fix: Correction
    spec: JobSpec
    line: str
