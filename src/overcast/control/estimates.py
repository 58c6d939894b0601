"""Step (c) of a tick, continued: pending and running jobs as decide() sees them, with corrected
runtime estimates (``scheduler/estimates.py``). The teams' factors come from one query over all their
jobs finished within the window (each weighs by its hours, however many there are), read at most
every ``ttl`` seconds; the hours requeued jobs already ran, from one query per tick, only while such a
job waits. Running jobs get their team's factor too, so the budget's hold and consolidation price them
as they would be priced once pending again.

Each correction is told once on the job's timeline (an ``estimate`` event), and its end too (the
team's factor back to 1: ordered as written again). What a job's timeline last told is read from the
store on the cache's first use (a restarted loop or a new leader does not tell it again) and for a
requeued job when it is seen pending again; one query each time, none while nothing changes."""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from overcast.scheduler.estimates import (
    PROVISIONING_HOURS,
    WINDOW_DAYS,
    Correction,
    J,
    as_written,
    corrected,
    correction,
    team_factors,
)
from overcast.scheduler.snapshot import PendingJob, RunningJob
from overcast.spec.models import JobSpec
from overcast.store import Store

ESTIMATE_CACHE_S = 60.0  # the teams' factors are read at most this often
EVENT = "estimate"


class EstimateCache:
    def __init__(self, ttl: float = ESTIMATE_CACHE_S) -> None:
        self.ttl = ttl
        self._read_at: float | None = None
        self._factors: dict[str, float] = {}
        self._copies: dict[str, _Copy] = {}  # job id -> its corrected copy last tick
        self._told: dict[str, str] | None = None  # pending job id -> its timeline's last estimate line
        self._known: set[str] = set()  # the pending jobs last tick

    def factors(self, store: Store, now: float) -> dict[str, float]:
        """team -> estimate factor, for the teams that have one (> 1)."""
        read_at = self._read_at
        if read_at is None or not 0 <= now - read_at < self.ttl:
            runs = store.finished_runs(now, days=WINDOW_DAYS, allowance_h=PROVISIONING_HOURS)
            self._factors = team_factors(runs)
            self._read_at = now
        return self._factors

    def correct(
        self, store: Store, now: float, pending: list[PendingJob], running: list[RunningJob]
    ) -> tuple[list[PendingJob], list[RunningJob]]:
        """``pending`` and ``running`` with each job's expected_hours as decide() should order and
        price it; the factors are read (at most) once for both."""
        factors = self.factors(store, now)
        copies: dict[str, _Copy] = {}
        ran = store.pending_run_hours() if any(job.attempt > 0 for job in pending) else {}
        told = self._last_told(store, pending)
        tell: list[tuple[str, str, str]] = []
        out: list[PendingJob] = []
        for job in pending:
            spec = job.spec
            hours = ran.get(job.id)
            # a resuming job's attempts add up to the work done; one that restarts from zero is at
            # least as long as its longest attempt
            resumes = spec.checkpoint_dir is not None
            already = 0.0 if hours is None else hours.total if resumes else hours.longest
            fix = correction(spec.expected_hours, factors.get(spec.team, 1.0), already, resumes)
            last = told.get(job.id, "")
            if fix is not None:
                line = fix.describe(spec.team)
            else:  # its correction ended, or there never was one
                line = as_written(spec.expected_hours) if last else ""
            if line != last:
                tell.append((job.id, spec.team, line))
            out.append(job if fix is None else self._copy(job, fix, copies))
        for job_id in told.keys() - self._known:
            del told[job_id]  # launched, cancelled or gone: read again if it is ever requeued
        fixed = []
        for run in running:
            fix = correction(run.spec.expected_hours, factors.get(run.spec.team, 1.0))
            fixed.append(run if fix is None else self._copy(run, fix, copies))
        if tell:  # one transaction: a team's whole backlog can be corrected at once
            store.add_job_events(EVENT, tell, at=now)
            told.update((job_id, line) for job_id, _, line in tell)  # told once it is written
        self._copies = copies
        return out, fixed

    def _last_told(self, store: Store, pending: list[PendingJob]) -> dict[str, str]:
        """What each pending job's timeline last told (only jobs that told something). Read for all
        pending jobs on first use; after that only for requeued jobs not pending last tick."""
        if self._told is None:
            self._told = store.last_job_events(EVENT)
        else:
            known = self._known
            back = [job.id for job in pending if job.attempt > 0 and job.id not in known]
            if back:
                self._told.update(store.last_job_events(EVENT, back))
        self._known = {job.id for job in pending}
        return self._told

    def _copy(self, job: J, fix: Correction, copies: dict[str, _Copy]) -> J:
        """``job`` with its corrected spec, reusing last tick's copy (a job's spec never changes)."""
        last = self._copies.get(job.id)
        if last is None or last.fix != fix:
            last = _Copy(fix, corrected(job, fix).spec)
        copies[job.id] = last
        return replace(job, spec=last.spec)


class _Copy(NamedTuple):
    fix: Correction
    spec: JobSpec
