"""What jobs really ran against what they declared: the input of ``scheduler.estimates``.

A job's run hours come from its launch records (launched_at..ended_at, the attempt's billed time):
for a job with a ``checkpoint_dir`` the sum over its attempts (each resumes where the last stopped, so
together they are its runtime), for one without only its last attempt (each attempt restarts from
zero; the last one, the one that succeeded, is the whole run). Summing a non-checkpointed job's
attempts would charge the team for preemptions it did not cause: those are the pool's risk, priced
separately (``placement.score.risk_factor``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

from sqlalchemy import JSON, Connection, and_, case, cast, func, insert, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB

from overcast.store.states import JobState
from overcast.store.tables import events, jobs, launches

_DAY_S = 86_400.0


class RunHours(NamedTuple):
    """Hours a job's ended attempts ran: all of them, and the longest one."""

    total: float
    longest: float


class EstimateMethods:
    _read: Callable[[], AbstractContextManager[Connection]]
    _write: Callable[[], AbstractContextManager[Connection]]
    dialect: str

    def finished_ratios(self, now: float, *, days: float, per_team: int) -> dict[str, list[float]]:
        """team -> (run hours / declared expected_hours) of its ``per_team`` most recently ended
        succeeded jobs that ended within ``days`` of ``now``. One query."""
        # rank the window's jobs first, and read the specs (JSON) of only the ranked few
        rank = func.row_number().over(partition_by=jobs.c.team, order_by=(jobs.c.ended_at.desc(), jobs.c.id))
        ranked = (
            select(jobs.c.id, rank.label("rank"))
            .where(jobs.c.state == JobState.SUCCEEDED.value, jobs.c.ended_at >= now - days * _DAY_S)
            .subquery()
        )
        spec = self._spec_json()
        resumes = spec["checkpoint_dir"].as_string().is_not(None)
        seconds = launches.c.ended_at - launches.c.launched_at
        counted = or_(resumes, launches.c.attempt == jobs.c.attempt)
        query = (
            select(
                jobs.c.team,
                func.max(spec["expected_hours"].as_float()),
                func.sum(case((counted, seconds), else_=0.0)),
            )
            .select_from(ranked)
            .join(jobs, jobs.c.id == ranked.c.id)
            .join(launches, and_(launches.c.job_id == jobs.c.id, _ended(launches.c)))
            .where(ranked.c.rank <= per_team)
            .group_by(jobs.c.id, jobs.c.team)
        )
        ratios: dict[str, list[float]] = defaultdict(list)
        with self._read() as conn:
            for team, declared, run_s in conn.execute(query):
                if declared and declared > 0:
                    ratios[team].append((run_s or 0.0) / 3600.0 / declared)
        return dict(ratios)

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


def _ended(c: Any) -> Any:
    """An ended launch, by its end time (set with ``ended``): a test of ``ended`` itself would make the
    planner walk ix_launches_ended, every ended launch there is, instead of the job's own by key."""
    return c.ended_at.is_not(None)
