"""What jobs really ran against what they declared: the input of ``scheduler.estimates``, and the
last correction each pending job's timeline tells.

A job's run hours come from its launch records (launched_at..ended_at, the attempt's billed time):
for a job with a ``checkpoint_dir`` the sum over its attempts (each resumes where the last stopped, so
together they are its runtime), for one without only its last attempt (each attempt restarts from
zero; the last one, the one that succeeded, is the whole run). Summing a non-checkpointed job's
attempts would charge the team for preemptions it did not cause: those are the pool's risk, priced
separately (``placement.score.risk_factor``). Each counted attempt weighs by its GPUs: a job's weight
is its GPU-hours (``scheduler.estimates`` says why).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

from sqlalchemy import JSON, Connection, and_, case, cast, func, insert, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB

from overcast.store.states import JobState
from overcast.store.tables import events, jobs, launches

_DAY_S = 86_400.0
_EVIDENCE = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class RunHours(NamedTuple):
    """Hours a job's ended attempts ran: all of them, and the longest one."""

    total: float
    longest: float


class Run(NamedTuple):
    """A finished job's evidence: hours run / hours declared, and the GPU-hours run (its weight)."""

    ratio: float
    gpu_hours: float


class Finished(NamedTuple):
    """A job that ended within the window, as the factor's evidence reads it."""

    job_id: str
    team: str
    ended_at: float
    run: Run | None  # None: no evidence (stopped short of its estimate, or its run is not known yet)
    unended: bool  # a counted attempt has not ended yet: its run is not known, read it again later


class EstimateMethods:
    _read: Callable[[], AbstractContextManager[Connection]]
    _write: Callable[[], AbstractContextManager[Connection]]
    dialect: str

    def finished_runs(self, now: float, *, days: float, allowance_h: float = 0.0) -> dict[str, list[Run]]:
        """team -> the evidence of each of its jobs that ended within ``days`` of ``now``, however many
        (``finished_jobs``, grouped by team)."""
        found: dict[str, list[Run]] = defaultdict(list)
        for row in self.finished_jobs(now, days=days, allowance_h=allowance_h):
            if row.run is not None:
                found[row.team].append(row.run)
        return dict(found)

    def finished_jobs(
        self,
        now: float,
        *,
        days: float,
        allowance_h: float = 0.0,
        ended_since: float | None = None,
        job_ids: Collection[str] | None = None,
    ) -> list[Finished]:
        """The jobs that ended within ``days`` of ``now`` and ran at least once, each with its evidence:
        (run hours / declared expected_hours, GPU-hours run) for a succeeded job, and for a failed or
        cancelled one that ran past its estimate (ratio > 1; one stopped early says nothing of its full
        runtime). Each counted attempt's run is its billed time less ``allowance_h`` (provisioning), at
        least 0, and weighs that times its launch's nodes x GPUs per node (a node without GPUs, or a
        launch recorded before its terms were, counts as one). A job whose counted attempts are not all
        ended has no evidence yet (``unended``). Only those that ended at or after ``ended_since``, or
        only ``job_ids``, when given (the incremental reads of ``control/estimates.py``). One query, by
        ix_jobs_state_ended."""
        spec = self._spec_json()
        resumes = spec["checkpoint_dir"].as_string().is_not(None)
        l = launches.c  # noqa: E741
        seconds = l.ended_at - l.launched_at  # NULL while the launch is open
        allowance = allowance_h * 3600.0
        counted = or_(resumes, l.attempt == jobs.c.attempt)
        run_s = case((and_(counted, seconds > allowance), seconds - allowance), else_=0.0)
        gpus = func.coalesce(l.nodes, 1) * case((l.gpus_per_node > 0, l.gpus_per_node), else_=1)
        since = now - days * _DAY_S if ended_since is None else max(now - days * _DAY_S, ended_since)
        query = (
            select(
                jobs.c.id,
                jobs.c.team,
                jobs.c.state,
                jobs.c.ended_at,
                func.max(spec["expected_hours"].as_float()),
                func.sum(run_s),
                func.sum(run_s * gpus),
                func.sum(case((counted, 1), else_=0)),
                func.sum(case((and_(counted, l.ended_at.is_(None)), 1), else_=0)),
            )
            .join(launches, l.job_id == jobs.c.id)
            .where(
                jobs.c.state.in_([s.value for s in _EVIDENCE]),
                jobs.c.attempt > 0,  # launched at least once (a job cancelled while pending ran nothing)
                jobs.c.ended_at >= since,
            )
            .group_by(jobs.c.id, jobs.c.team, jobs.c.state, jobs.c.ended_at)
        )
        if job_ids is not None:
            query = query.where(jobs.c.id.in_(list(job_ids)))
        with self._read() as conn:
            return [_finished(*row) for row in conn.execute(query)]

    def pending_run_hours(self) -> dict[str, RunHours]:
        """Pending jobs that already ran (requeued) -> the hours their ended attempts ran. One query."""
        c = launches.c
        seconds = c.ended_at - c.launched_at
        query = (
            select(c.job_id, func.sum(seconds), func.max(seconds))
            .join(jobs, jobs.c.id == c.job_id)
            .where(jobs.c.state == JobState.PENDING.value, jobs.c.attempt > 0, _ended(c))
            .group_by(c.job_id)
        )
        with self._read() as conn:
            return {
                job_id: RunHours(total / 3600.0, longest / 3600.0)
                for job_id, total, longest in conn.execute(query)
            }

    def last_job_events(self, kind: str, job_ids: list[str] | None = None) -> dict[str, str]:
        """Job id -> the detail of its latest ``kind`` event, for ``job_ids`` (None: every pending
        job). One query, by ix_events_job_id_id."""
        e = events.c
        last = select(e.job_id, func.max(e.id).label("id")).where(e.kind == kind)
        if job_ids is None:
            last = last.join(jobs, jobs.c.id == e.job_id).where(jobs.c.state == JobState.PENDING.value)
        else:
            last = last.where(e.job_id.in_(job_ids))
        latest = last.group_by(e.job_id).subquery()
        query = select(latest.c.job_id, e.detail).join(events, e.id == latest.c.id)
        with self._read() as conn:
            return {job_id: detail for job_id, detail in conn.execute(query)}

    def add_job_events(self, kind: str, rows: list[tuple[str, str, str]], *, at: float) -> None:
        """One ``kind`` event per (job id, team, detail), in one transaction."""
        values = [{"job_id": j, "team": t, "at": at, "kind": kind, "detail": d} for j, t, d in rows]
        with self._write() as conn:
            conn.execute(insert(events), values)

    def _spec_json(self) -> Any:
        """The jobs' spec column as JSON. PostgreSQL needs the text cast; SQLite must not get one (a
        CAST to an unknown type name there gives NUMERIC affinity: the text would become 0)."""
        if self.dialect == "postgresql":
            return cast(jobs.c.spec, JSONB)
        return type_coerce(jobs.c.spec, JSON)


def _finished(
    job_id: str, team: str, state: str, ended_at: float, declared: float | None, run_s: float | None,
    gpu_s: float | None, counted: int | None, unended: int | None,
) -> Finished:  # fmt: skip
    """One row of ``finished_jobs``' query."""
    if unended:
        return Finished(job_id, team, ended_at, None, True)
    if not declared or declared <= 0 or not counted:
        return Finished(job_id, team, ended_at, None, False)
    hours = (run_s or 0.0) / 3600.0
    evidence = state == JobState.SUCCEEDED.value or hours > declared
    run = Run(hours / declared, (gpu_s or 0.0) / 3600.0) if evidence else None
    return Finished(job_id, team, ended_at, run, False)


def _ended(c: Any) -> Any:
    """An ended launch, by its end time (set with ``ended``): a test of ``ended`` itself would make the
    planner walk ix_launches_ended, every ended launch there is, instead of the job's own by key."""
    return c.ended_at.is_not(None)
