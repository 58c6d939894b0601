"""The store's bookkeeping for the control loop: launch records, learned pool health, the leader lease.

A mixin of ``Store`` (the same one-short-transaction-per-method rule), plus the dialect helpers for
inserts that must not fail on a duplicate key (SQLite and PostgreSQL both speak ON CONFLICT).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection, case, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from overcast.store.records import LaunchRecord, LaunchTerms, OpenLaunch, PoolHealthRecord
from overcast.store.tables import launches, leases, pool_health
from overcast.store.usage import RESERVED


class ControlStateMethods:
    clock: Callable[[], float]
    dialect: str
    _write: Callable[[], AbstractContextManager[Connection]]
    _read: Callable[[], AbstractContextManager[Connection]]

    # -- launches --------------------------------------------------------------------------------

    def record_launch(
        self, job_id: str, attempt: int, pool_id: str, backend: str, handle: str, *, team: str,
        terms: LaunchTerms,
    ) -> None:  # fmt: skip
        """Remember that (job, attempt) was applied to a backend, with the terms billing charges it at
        (frozen now); recording it again updates it."""
        values = {
            "job_id": job_id, "attempt": attempt, "pool_id": pool_id, "backend": backend, "handle": handle,
            "launched_at": self.clock(), "ended": False, "ended_at": None, "outcome": None, "team": team,
            **asdict(terms),
        }  # fmt: skip
        with self._write() as conn:
            self._upsert(conn, launches, ("job_id", "attempt"), values)

    def start_launch(self, job_id: str, attempt: int, at: float) -> None:
        """The launch really began at ``at`` (it waited in a queue since it was recorded): billing
        starts there. Only ever later, never past now nor past an end already recorded."""
        at = min(at, self.clock())
        c = launches.c
        with self._write() as conn:
            conn.execute(
                update(launches)
                .where(c.job_id == job_id, c.attempt == attempt, c.launched_at < at)
                .where(or_(c.ended.is_(False), c.ended_at >= at))
                .values(launched_at=at)
            )

    def set_launch_handle(self, job_id: str, attempt: int, handle: str) -> None:
        """The backend's handle for a launch, once it returned; a launch record already closed (by a
        reconcile that found the attempt gone) stays closed."""
        with self._write() as conn:
            conn.execute(
                update(launches)
                .where(launches.c.job_id == job_id, launches.c.attempt == attempt)
                .where(launches.c.ended.is_(False))
                .values(handle=handle)
            )

    def launches(self, *, active_only: bool = True, job_id: str | None = None) -> list[LaunchRecord]:
        """Launch records in launch order: the open ones (or all), of every job (or of ``job_id``)."""
        query = select(
            launches.c.job_id, launches.c.attempt, launches.c.pool_id, launches.c.backend,
            launches.c.handle, launches.c.ended,
        ).order_by(launches.c.launched_at, launches.c.job_id, launches.c.attempt)  # fmt: skip
        if active_only:
            query = query.where(launches.c.ended.is_(False))
        if job_id is not None:
            query = query.where(launches.c.job_id == job_id)
        with self._read() as conn:
            return [LaunchRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in conn.execute(query)]

    def open_launches(self) -> dict[tuple[str, int], OpenLaunch]:
        """(job, attempt) -> when each open launch began and the $/node-hour it is billed at, frozen at
        launch: what the scheduler holds against a team's budget, whether or not its pool is listed."""
        c = launches.c
        price = case((c.purchase == RESERVED, 0.0), else_=c.price_per_node_hour)
        query = select(c.job_id, c.attempt, c.launched_at, price).where(c.ended.is_(False))
        with self._read() as conn:
            return {(r[0], r[1]): OpenLaunch(r[2], r[3]) for r in conn.execute(query)}

    def end_launch(
        self, job_id: str, attempt: int, outcome: str, *, at: float | None = None, seen_running: bool = False
    ) -> None:
        """Close a launch record at ``at`` (the backend's event time; default now), clamped to the
        launch's start and to now. An end only ever moves earlier: a late duplicate (a reconcile's
        "lost", a stale stop) cannot stretch a closed launch, an event's own time can correct it.
        ``seen_running``: the attempt was seen running until this end, so a "lost" end (a guess from
        one listing that missed it) is moved later to it; no other end is ever stretched."""
        now = self.clock()
        end = now if at is None else min(at, now)
        clamped = case((launches.c.launched_at > end, launches.c.launched_at), else_=end)
        movable = [launches.c.ended.is_(False), launches.c.ended_at > clamped]
        if seen_running:
            movable.append(launches.c.outcome == "lost")
        with self._write() as conn:
            conn.execute(
                update(launches)
                .where(launches.c.job_id == job_id, launches.c.attempt == attempt)
                .where(or_(*movable))
                .values(ended=True, ended_at=clamped, outcome=outcome)
            )

    # -- pool health -----------------------------------------------------------------------------

    def pool_health(self) -> dict[str, PoolHealthRecord]:
        c = pool_health.c
        query = select(c.pool_id, c.health, c.until, c.failures, c.detail)
        with self._read() as conn:
            return {r[0]: PoolHealthRecord(r[1], r[2], r[3], r[4]) for r in conn.execute(query)}

    def set_pool_health(
        self, pool_id: str, health: str, *, until: float | None, failures: int, detail: str = ""
    ) -> None:
        values = {
            "pool_id": pool_id, "health": str(health), "until": until, "failures": failures,
            "detail": detail, "updated_at": self.clock(),
        }  # fmt: skip
        with self._write() as conn:
            self._upsert(conn, pool_health, ("pool_id",), values)

    # -- leadership ------------------------------------------------------------------------------

    def try_acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``holder``: True while nobody else holds an unexpired one."""
        now = self.clock()
        with self._write() as conn:
            renewed = conn.execute(
                update(leases)
                .where(leases.c.name == name, or_(leases.c.holder == holder, leases.c.expires_at <= now))
                .values(holder=holder, expires_at=now + ttl_seconds)
            )
            if renewed.rowcount == 1:
                return True
            # RETURNING, not rowcount: drivers disagree on rowcount for INSERT .. ON CONFLICT DO NOTHING.
            inserted = conn.execute(
                self._insert_ignore(leases, ("name",))
                .values(name=name, holder=holder, expires_at=now + ttl_seconds)
                .returning(leases.c.name)
            )
            return inserted.first() is not None

    def release_lease(self, name: str, holder: str) -> None:
        with self._write() as conn:
            conn.execute(
                update(leases).where(leases.c.name == name, leases.c.holder == holder).values(expires_at=0.0)
            )

    def lease_holder(self, name: str) -> str | None:
        with self._read() as conn:
            row = conn.execute(
                select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
            ).first()
        return row.holder if row is not None and row.expires_at > self.clock() else None

    # -- helpers ---------------------------------------------------------------------------------

    def _dialect_insert(self, table: Any) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def _insert_ignore(self, table: Any, keys: tuple[str, ...]) -> Any:
        return self._dialect_insert(table).on_conflict_do_nothing(index_elements=list(keys))

    def _upsert(self, conn: Connection, table: Any, keys: tuple[str, ...], values: Mapping[str, Any]) -> None:
        stmt = self._dialect_insert(table).values(dict(values))
        rest = {k: stmt.excluded[k] for k in values if k not in keys}
        conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=rest))
