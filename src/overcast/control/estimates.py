"""Step (c) of a tick, continued: pending and running jobs as decide() sees them, with corrected
runtime estimates (``scheduler/estimates.py``). The teams' factors come from all their jobs finished
within the window (each weighs by its GPU-hours, however many there are), kept in memory
(``Evidence``) and brought up to date at most every ``ttl`` seconds by reading only the jobs that ended
since; the hours requeued jobs already ran, from one query per tick, only while such a job waits.
Running jobs get their team's factor too, so the budget's hold and consolidation price them as they
would be priced once pending again.

Each correction is told once on the job's timeline (an ``estimate`` event), and its end too (the
team's factor back to 1: ordered as written again). What a job's timeline last told is read from the
store on the cache's first use (a restarted loop or a new leader does not tell it again) and for a
requeued job when it is seen pending again; one query each time, none while nothing changes."""

from __future__ import annotations

import heapq
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
    estimate_factor,
)
from overcast.scheduler.snapshot import PendingJob, RunningJob
from overcast.spec.models import JobSpec
from overcast.store import Store
from overcast.store.estimates import Finished, Run

ESTIMATE_CACHE_S = 60.0  # the teams' factors are brought up to date at most this often
EVENT = "estimate"
# An end is written up to this long after the time it records (a backend event handled late, a writer
# whose clock is behind, a transaction that commits after a read began): each read takes again the jobs
# that ended this long before the last one.
LATE_S = 3600.0
# A full read at least this often: it also sees what no end time tells, a closed launch's end corrected
# (by a late backend event) after its job ended more than LATE_S before.
FULL_READ_S = 3600.0
_DAY_S = 86_400.0


class Evidence:
    """Each team's finished jobs of the window (``Store.finished_jobs``), kept in memory: the first
    read, and one every ``full_every`` seconds, takes all of them; the others only the jobs that ended
    since the last read (less ``LATE_S``) and those whose run had not all ended, and drop the jobs that
    left the window. A team's factor is computed again only when its jobs changed."""

    def __init__(self, full_every: float = FULL_READ_S) -> None:
        self.full_every = full_every
        self._read_at: float | None = None
        self._full_at = 0.0
        self._jobs: dict[str, Finished] = {}  # job id -> its row, evidence or not (unended ones too)
        self._unended: set[str] = set()  # the jobs whose run had not all ended at the last read
        self._ends: list[tuple[float, str]] = []  # (ended_at, job id), a heap: who leaves the window next
        self._teams: dict[str, dict[str, Run]] = {}  # team -> job id -> its evidence
        self._factors: dict[str, float] = {}  # team -> its factor, only those > 1

    def factors(self, store: Store, now: float) -> dict[str, float]:
        """team -> estimate factor, for the teams that have one (> 1), as of ``now``."""
        changed = self._read(store, now)
        changed |= self._expire(now - WINDOW_DAYS * _DAY_S)
        for team in changed:
            runs = self._teams.get(team)
            factor = estimate_factor(runs.values()) if runs else 1.0
            if factor > 1.0:
                self._factors[team] = factor
            else:
                self._factors.pop(team, None)
        return dict(self._factors)

    def runs(self) -> dict[str, list[Run]]:
        """team -> its jobs' evidence as of the last read (as ``Store.finished_runs`` gives it)."""
        return {team: list(runs.values()) for team, runs in self._teams.items() if runs}

    def _read(self, store: Store, now: float) -> set[str]:
        """Read what changed since the last read into memory; the teams whose evidence it touched."""
        last = self._read_at
        read = {"days": WINDOW_DAYS, "allowance_h": PROVISIONING_HOURS}
        if last is None or not 0 <= now - self._full_at < self.full_every or now < last:
            rows = store.finished_jobs(now, **read)  # first: a failed read leaves the evidence as it was
            changed = set(self._teams)
            self._jobs, self._unended, self._ends, self._teams = {}, set(), [], {}
            self._full_at = now
        else:
            changed = set()
            rows = store.finished_jobs(now, ended_since=last - LATE_S, **read)
            if self._unended:
                rows += store.finished_jobs(now, job_ids=sorted(self._unended), **read)
                for job_id in self._unended - {row.job_id for row in rows}:  # left the window
                    changed |= self._forget(job_id)
        self._read_at = now
        for row in rows:
            old = self._jobs.get(row.job_id)
            if old == row:
                continue  # read again, unchanged (most of each read: LATE_S's overlap)
            changed |= self._forget(row.job_id)
            self._jobs[row.job_id] = row
            if row.unended:
                self._unended.add(row.job_id)
            if old is None or old.ended_at != row.ended_at:  # read again: its entry is there already
                heapq.heappush(self._ends, (row.ended_at, row.job_id))
            if row.run is not None:
                self._teams.setdefault(row.team, {})[row.job_id] = row.run
                changed.add(row.team)
        return changed

    def _expire(self, start: float) -> set[str]:
        """Forget the jobs that ended before ``start``; the teams that lost evidence."""
        changed: set[str] = set()
        while self._ends and self._ends[0][0] < start:
            ended_at, job_id = heapq.heappop(self._ends)
            row = self._jobs.get(job_id)
            if row is not None and row.ended_at == ended_at:  # else a stale entry: read again since
                changed |= self._forget(job_id)
        return changed

    def _forget(self, job_id: str) -> set[str]:
        """Drop ``job_id``'s row; its team if that took evidence away."""
        row = self._jobs.pop(job_id, None)
        self._unended.discard(job_id)
        if row is None or row.run is None:
            return set()
        self._teams[row.team].pop(job_id, None)
        return {row.team}


class EstimateCache:
    def __init__(self, ttl: float = ESTIMATE_CACHE_S) -> None:
        self.ttl = ttl
        self._read_at: float | None = None
        self._factors: dict[str, float] = {}
        self.evidence = Evidence()
        self._copies: dict[str, _Copy] = {}  # job id -> its corrected copy last tick
        self._told: dict[str, str] | None = None  # pending job id -> its timeline's last estimate line
        self._known: set[str] = set()  # the pending jobs last tick

    def factors(self, store: Store, now: float) -> dict[str, float]:
        """team -> estimate factor, for the teams that have one (> 1)."""
        read_at = self._read_at
        if read_at is None or not 0 <= now - read_at < self.ttl:
            self._factors = self.evidence.factors(store, now)
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
