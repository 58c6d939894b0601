"""The Store: jobs, events, launches, pool health, leases and team tokens in one database.

Every public method is one short transaction and returns plain records. State changes go through
``transition``, a compare-and-set (``UPDATE ... WHERE state IN (...)``), so two control loops on one
PostgreSQL can never both move a job PENDING -> LAUNCHING: the database decides which UPDATE matched.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, insert, select, update
from sqlalchemy.exc import OperationalError

from overcast.spec.models import JobSpec
from overcast.store import migrate, tokens
from overcast.store.budgets import BudgetMethods
from overcast.store.control_state import ControlStateMethods
from overcast.store.engine import StoreUnavailable, default_url, is_in_memory, make_engine, safe_url
from overcast.store.estimates import EstimateMethods
from overcast.store.records import EventRecord, JobRecord, job_record
from overcast.store.services import ServiceMethods
from overcast.store.states import TERMINAL_STATES, JobState
from overcast.store.tables import events, jobs, launches, teams
from overcast.store.tables import tokens as tokens_table
from overcast.store.usage import UsageMethods

_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # URL-safe, no look-alikes (l/1, o/0)
TEAM_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # also the API's path/query pattern for a team
_TEAM_NAME = re.compile(TEAM_NAME_PATTERN)
# Columns a caller may set through transition(); state and updated_at are set by the store itself.
TRANSITION_FIELDS = frozenset(
    {
        "priority", "attempt", "pool_id", "backend", "nodes", "restarts", "failures",
        "started_at", "ended_at", "cancel_requested", "reason",
    }
)  # fmt: skip


def check_team_name(name: str) -> None:
    """Raise ValueError unless ``name`` can name a team (1-64 letters, digits, '_', '.', '-')."""
    if not _TEAM_NAME.fullmatch(name):
        raise ValueError(f"invalid team name {name!r}: use 1-64 letters, digits, '_', '.', '-'")


def new_job_id() -> str:
    """A job id: "j-" and 10 random characters (50 bits), short, URL-safe, unique in practice."""
    return "j-" + "".join(_ID_ALPHABET[b & 31] for b in secrets.token_bytes(10))


class Store(ServiceMethods, ControlStateMethods, UsageMethods, BudgetMethods, EstimateMethods):
    def __init__(self, url: str | None = None, *, clock: Callable[[], float] = time.time) -> None:
        """Open (and migrate to head) the database at ``url``, default: see ``engine.default_url``."""
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        self.clock = clock
        # An in-memory SQLite database is one connection shared by every thread (engine.py): threads
        # must take turns, or one thread's rollback undoes another's acknowledged write.
        in_memory = is_in_memory(self.engine)
        self._serial: AbstractContextManager = threading.RLock() if in_memory else nullcontext()
        try:
            migrate.upgrade(self.engine)
        except OperationalError as err:
            self.engine.dispose()
            first = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
            raise StoreUnavailable(f"cannot open the database {safe_url(self.url)}: {first}") from None

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """One read-only round trip (takes no write lock); raises OperationalError when unreachable."""
        with self._read() as conn:
            conn.execute(select(1))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._serial, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._serial, self.engine.connect() as conn:
            conn.execution_options(readonly=True)
            with conn.begin():
                yield conn

    # -- teams and tokens ----------------------------------------------------------------------

    def create_team(self, name: str, *, admin: bool = False) -> str:
        """Create the team (or add a token to an existing one) and return a new plaintext token."""
        check_team_name(name)
        token = tokens.new_token()
        now = self.clock()
        with self._write() as conn:
            # Insert-or-ignore, not read-then-insert: two processes creating one team both succeed.
            conn.execute(self._insert_ignore(teams, ("name",)).values(name=name, admin=admin, created_at=now))
            if admin:
                conn.execute(update(teams).where(teams.c.name == name).values(admin=True))
            conn.execute(
                insert(tokens_table).values(
                    id=token.token_id,
                    team=name,
                    salt=token.salt,
                    secret_hash=token.secret_hash,
                    created_at=now,
                )
            )
        return token.plaintext

    def team_tokens(self, team: str) -> list[tuple[str, float]]:
        """(token id, created_at) of the team's tokens, oldest first: ids only, the secrets are not kept."""
        query = (
            select(tokens_table.c.id, tokens_table.c.created_at)
            .where(tokens_table.c.team == team)
            .order_by(tokens_table.c.created_at, tokens_table.c.id)
        )
        with self._read() as conn:
            return [(row.id, row.created_at) for row in conn.execute(query)]

    def revoke_token(self, token_id: str) -> str | None:
        """Delete a token by its id (``oc_<id>_<secret>``); the team it belonged to, None if no such token.
        A server that verified it in the last ``api.auth.CACHE_SECONDS`` still accepts it until then."""
        with self._write() as conn:
            team = conn.execute(select(tokens_table.c.team).where(tokens_table.c.id == token_id)).scalar()
            if team is not None:
                conn.execute(delete(tokens_table).where(tokens_table.c.id == token_id))
        return team

    def has_team(self, name: str) -> bool:
        with self._read() as conn:
            return conn.execute(select(teams.c.name).where(teams.c.name == name)).first() is not None

    def team_for_token(self, token: str) -> tuple[str, bool] | None:
        """(team, is_admin) for a valid token, else None."""
        parts = tokens.split_token(token)
        if parts is None:
            return None
        token_id, secret = parts
        query = (
            select(tokens_table.c.salt, tokens_table.c.secret_hash, teams.c.name, teams.c.admin)
            .join(teams, teams.c.name == tokens_table.c.team)
            .where(tokens_table.c.id == token_id)
        )
        with self._read() as conn:
            row = conn.execute(query).first()
        if row is None or not tokens.matches(row.salt, secret, row.secret_hash):
            return None
        return row.name, bool(row.admin)

    # -- jobs ------------------------------------------------------------------------------------

    def submit(self, team: str, spec: JobSpec) -> JobRecord:
        """Store a new PENDING job owned by ``team`` (the spec's team field is set to match)."""
        return self.submit_many(team, [spec])[0]

    def submit_many(self, team: str, specs: Iterable[JobSpec]) -> list[JobRecord]:
        """Submit several jobs in one transaction (one round trip per table, not per job).

        submitted_at grows by 1 µs per job within the batch, so listing order is submission order.
        """
        now = self.clock()
        rows: list[dict[str, Any]] = []
        owned: list[JobSpec] = []
        for i, spec in enumerate(specs):
            if spec.team != team:
                spec = spec.model_copy(update={"team": team})
            owned.append(spec)
            rows.append({
                "id": new_job_id(), "team": team, "name": spec.name, "spec": spec.model_dump_json(),
                "state": JobState.PENDING.value, "priority": spec.priority, "attempt": 0, "pool_id": None,
                "backend": None, "nodes": None, "restarts": 0, "failures": 0, "submitted_at": now + i * 1e-6,
                "updated_at": now, "started_at": None, "ended_at": None, "cancel_requested": False,
                "reason": None,
            })  # fmt: skip
        if not rows:
            return []
        submitted = [
            {"job_id": r["id"], "team": team, "at": now, "kind": "submitted", "detail": ""} for r in rows
        ]
        with self._write() as conn:
            # a single row as parameters, not a one-element list: executemany costs more per call
            conn.execute(insert(jobs), rows[0] if len(rows) == 1 else rows)
            conn.execute(insert(events), submitted[0] if len(rows) == 1 else submitted)
        return [job_record(row, spec) for row, spec in zip(rows, owned, strict=True)]

    def get(self, job_id: str, *, team: str | None = None) -> JobRecord | None:
        """The job, or None if it does not exist or belongs to another team (team=None: admin view)."""
        query = select(jobs).where(jobs.c.id == job_id)
        if team is not None:
            query = query.where(jobs.c.team == team)
        with self._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else job_record(row._mapping)

    def attempt_over(self, job_id: str, attempt: int) -> bool:
        """Whether ``attempt`` of the job is over: the job is gone, has ended or has moved to a later one
        (where a follow of that attempt's log stops)."""
        job = self.get(job_id)
        return job is None or job.state.terminal or job.attempt > attempt

    def list(
        self,
        *,
        team: str | None = None,
        states: Iterable[JobState] | None = None,
        limit: int = 100,
        offset: int = 0,
        cancel_requested: bool | None = None,
    ) -> list[JobRecord]:
        """Jobs in submission order (oldest first); ``cancel_requested=True``: only those flagged."""
        query = (
            select(jobs).order_by(jobs.c.submitted_at, jobs.c.id).limit(max(0, limit)).offset(max(0, offset))
        )
        if team is not None:
            query = query.where(jobs.c.team == team)
        if states is not None:
            query = query.where(jobs.c.state.in_([JobState(s).value for s in states]))
        if cancel_requested is not None:
            query = query.where(jobs.c.cancel_requested.is_(cancel_requested))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [job_record(row._mapping) for row in rows]

    def count_by_state(self) -> dict[JobState, int]:
        with self._read() as conn:
            rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()
        return {JobState(state): count for state, count in rows}

    def pool_holds(self, states: Iterable[JobState], prefix: str) -> tuple[dict[str, int], dict[str, int]]:
        """Per pool: the nodes of jobs in ``states`` placed there, and its open launch records whose job id
        starts with ``prefix`` (services' replicas, a node each). Grouped in SQL: a caller asking every tick
        must not load each live job (51 ms per 2,000 in SQLite)."""
        values = [JobState(s).value for s in states]
        nodes = func.sum(func.coalesce(jobs.c.nodes, 1))  # set with pool_id when a job is claimed
        by_jobs = select(jobs.c.pool_id, nodes).where(jobs.c.state.in_(values), jobs.c.pool_id.is_not(None))
        c = launches.c
        by_prefix = select(c.pool_id, func.count()).where(c.ended.is_(False), c.job_id.startswith(prefix))
        with self._read() as conn:
            held = dict(conn.execute(by_jobs.group_by(jobs.c.pool_id)).all()) if values else {}
            records = dict(conn.execute(by_prefix.group_by(c.pool_id)).all())
        return {k: int(v) for k, v in held.items()}, {k: int(v) for k, v in records.items()}

    def request_cancel(self, job_id: str, *, team: str | None = None) -> JobRecord | None:
        """Flag the job for cancellation; a PENDING job (nothing launched) is cancelled at once.

        Running jobs keep their state: the control loop sees ``cancel_requested`` and stops them.
        Returns None if the job does not exist (or belongs to another team).
        """
        now = self.clock()
        where = jobs.c.id == job_id
        if team is not None:
            where = and_(where, jobs.c.team == team)
        with self._write() as conn:
            # FOR UPDATE: on PostgreSQL the row stays locked from this read to the write below, so a
            # concurrent PENDING -> LAUNCHING either finishes first (and we only flag the job) or
            # waits and then fails its compare-and-set. SQLite's BEGIN IMMEDIATE already serialises.
            locked = select(jobs.c.state, jobs.c.cancel_requested).where(where).with_for_update()
            row = conn.execute(locked).first()
            if row is None:
                return None
            if JobState(row.state) not in TERMINAL_STATES and not row.cancel_requested:
                changes: dict[str, Any] = {"cancel_requested": True, "updated_at": now}
                kinds = [("cancel-requested", "")]
                if row.state == JobState.PENDING:
                    changes |= {
                        "state": JobState.CANCELLED.value,
                        "ended_at": now,
                        "reason": "cancelled by user",
                    }
                    kinds.append(("cancelled", "while pending"))
                conn.execute(update(jobs).where(jobs.c.id == job_id).values(changes))
                for kind, detail in kinds:
                    conn.execute(_event(job_id, kind, detail, now))
            fresh = conn.execute(select(jobs).where(jobs.c.id == job_id)).one()
        return job_record(fresh._mapping)

    def transition(
        self,
        job_id: str,
        from_states: Iterable[JobState],
        to: JobState,
        *,
        event: tuple[str, str] | None = None,
        event_at: float | None = None,
        attempt_was: int | None = None,
        **fields: Any,
    ) -> JobRecord | None:
        """Compare-and-set in one transaction: only if the job is in one of from_states, else None.

        ``fields`` may set any of TRANSITION_FIELDS. Moving to RUNNING sets started_at and moving to
        a terminal state sets ended_at, unless given: to ``event_at`` (when the backend saw it, not when
        this loop got to it; clamped to now and to started_at), else to the end of the current attempt's
        closed launch record (end_launch's event time), else now. ``event`` = (kind, detail) is written
        in the same transaction, and only if the transition happens: a crash can never keep one without
        the other.
        ``attempt_was`` also requires the job's attempt number: a loop that read the job before another
        loop used an attempt cannot reuse that number.
        """
        unknown = set(fields) - TRANSITION_FIELDS
        if unknown:
            raise ValueError(
                f"transition() cannot set {sorted(unknown)}; allowed: {sorted(TRANSITION_FIELDS)}"
            )
        to = JobState(to)
        now = self.clock()
        at = None if event_at is None else min(event_at, now)  # a backend clock ahead of ours: now
        changes: dict[str, Any] = {"state": to.value, "updated_at": now, **fields}
        if to is JobState.RUNNING:
            changes.setdefault("started_at", now if at is None else at)
        if to in TERMINAL_STATES and "ended_at" not in changes:
            changes["ended_at"] = _end_time(at, now)
        allowed = [JobState(s).value for s in from_states]
        match = [jobs.c.id == job_id, jobs.c.state.in_(allowed)]
        if attempt_was is not None:
            match.append(jobs.c.attempt == attempt_was)
        with self._write() as conn:
            result = conn.execute(update(jobs).where(*match).values(changes))
            if result.rowcount != 1:
                return None
            if event is not None:
                kind, detail = event
                conn.execute(_event(job_id, kind, detail, now if event_at is None else event_at))
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).one()
        return job_record(row._mapping)

    # -- events ----------------------------------------------------------------------------------

    def add_event(self, job_id: str | None, kind: str, detail: str = "", *, at: float | None = None) -> None:
        with self._write() as conn:
            conn.execute(_event(job_id, kind, detail, self.clock() if at is None else at))

    def events(
        self, *, job_id: str | None = None, team: str | None = None, after_id: int = 0, limit: int = 1000
    ) -> list[EventRecord]:
        """Events with id > after_id, oldest first. With ``team``, only that team's jobs' events."""
        query = (
            select(events.c.id, events.c.job_id, events.c.at, events.c.kind, events.c.detail)
            .where(events.c.id > after_id)
            .order_by(events.c.id)
            .limit(max(0, limit))
        )
        if job_id is not None:
            query = query.where(events.c.job_id == job_id)
        if team is not None:
            query = query.where(events.c.team == team)
        with self._read() as conn:
            return [EventRecord(*row) for row in conn.execute(query)]


def _end_time(at: float | None, now: float) -> Any:
    """SQL for a job's ended_at, evaluated on the row being updated (its values before the update)."""
    if at is not None:
        return case((jobs.c.started_at > at, jobs.c.started_at), else_=at)
    closed = (
        select(launches.c.ended_at)
        .where(launches.c.job_id == jobs.c.id, launches.c.attempt == jobs.c.attempt)
        .where(launches.c.ended.is_(True))
        .scalar_subquery()
    )
    # A PENDING job has no live attempt: its last launch ended long before it gives up.
    return case((jobs.c.state == JobState.PENDING.value, now), else_=func.coalesce(closed, now))


def _event(job_id: str | None, kind: str, detail: str, at: float) -> Any:
    """The INSERT of one timeline event (a job's event carries the job's team)."""
    team = _team_of(job_id) if job_id else None
    return insert(events).values(job_id=job_id, team=team, at=at, kind=kind, detail=detail)


def _team_of(job_id: str) -> Any:
    """Scalar subquery: the job's team, so events carry it without a second round trip."""
    return select(jobs.c.team).where(jobs.c.id == job_id).scalar_subquery()
