"""GPU-hours and dollars from the launch records: per team, pool, provider or job, over a time window.

A launch (one attempt of a job on one pool) is billed from ``launched_at`` to ``ended_at`` (the
backend's event time when it reported one), a running one up to now, at the nodes, GPUs and list price
frozen when it launched. A window [since, until) counts only the part of each launch inside it. The
sums run in the database (one GROUP BY), so a long history is not read into Python.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import Connection, case, func, or_, select

from overcast.store.tables import launches

UsageBy = Literal["team", "pool", "provider", "job"]
USAGE_BY: tuple[str, ...] = get_args(UsageBy)
_L = launches.c
_KEYS = {"team": _L.team, "pool": _L.pool_id, "provider": _L.provider, "job": _L.job_id}
RESERVED = "reserved"  # placement.pool.Purchase.RESERVED (the store does not import placement)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    key: str | None  # the team, pool id, provider or job id; None: unknown (a launch from before 0004)
    gpu_hours: float  # every purchase, reserved included
    node_hours: float
    dollars: float  # list-price spend on on-demand and spot pools
    reserved_gpu_hours: float  # the part of gpu_hours on reserved pools (already paid for)
    reserved_dollars: float  # reserved use at its recorded list price: not spend, but what it was worth
    launches: int  # launches overlapping the window
    unpriced_launches: int  # of those, recorded before launches carried their terms: node-hours only


@dataclass(frozen=True, slots=True)
class UsageReport:
    since: float
    until: float
    by: str
    team: str | None  # the team filter (None: every team)
    rows: list[UsageRecord]  # most dollars (spend + reserved value) first
    total: UsageRecord  # key None


class UsageMethods:
    clock: Callable[[], float]
    _read: Callable[[], AbstractContextManager[Connection]]

    def usage(self, since: float, until: float, *, by: str = "team", team: str | None = None) -> UsageReport:
        """GPU-hours and dollars over [since, until) grouped ``by`` team/pool/provider/job; ``team``
        counts only that team's launches (a team token's view). Raises ValueError on a bad window or key."""
        if by not in _KEYS:
            raise ValueError(f"unknown grouping {by!r}; use one of {', '.join(USAGE_BY)}")
        if not since < until:
            raise ValueError(f"since ({since}) must be before until ({until})")
        now = self.clock()
        c = launches.c
        end_or_now = func.coalesce(c.ended_at, now)
        start = case((c.launched_at > since, c.launched_at), else_=since)
        end = case((end_or_now < until, end_or_now), else_=until)
        seconds = case((end > start, end - start), else_=0.0)
        node_seconds = seconds * c.nodes
        reserved = case((c.purchase == RESERVED, 1), else_=0)
        key = _KEYS[by].label("key")
        query = (
            select(
                key,
                reserved.label("reserved"),
                func.count().label("launches"),
                func.sum(case((c.price_per_node_hour.is_(None), 1), else_=0)).label("unpriced"),
                func.sum(node_seconds).label("node_s"),
                func.sum(node_seconds * c.gpus_per_node).label("gpu_s"),
                func.sum(node_seconds * c.price_per_node_hour).label("price_s"),
            )
            .where(c.launched_at < until, or_(end_or_now > since, c.launched_at >= since))
            .group_by(_KEYS[by], reserved)
        )
        if team is not None:
            query = query.where(c.team == team)
        with self._read() as conn:
            groups = conn.execute(query).all()
        rows = _merge(groups)
        rows.sort(key=lambda r: (-(r.dollars + r.reserved_dollars), -r.gpu_hours, r.key or ""))
        return UsageReport(since, until, by, team, rows, _sum(None, rows))


def _merge(groups: list[Any]) -> list[UsageRecord]:
    """One record per key from the (key, reserved?) groups."""
    parts: dict[str | None, list[UsageRecord]] = {}
    for g in groups:
        gpu_h, node_h, dollars = (g.gpu_s or 0.0) / 3600, (g.node_s or 0.0) / 3600, (g.price_s or 0.0) / 3600
        if g.reserved:
            part = UsageRecord(g.key, gpu_h, node_h, 0.0, gpu_h, dollars, g.launches, int(g.unpriced or 0))
        else:
            part = UsageRecord(g.key, gpu_h, node_h, dollars, 0.0, 0.0, g.launches, int(g.unpriced or 0))
        parts.setdefault(g.key, []).append(part)
    return [_sum(key, records) for key, records in parts.items()]


def _sum(key: str | None, records: list[UsageRecord]) -> UsageRecord:
    return UsageRecord(
        key,
        gpu_hours=sum(r.gpu_hours for r in records),
        node_hours=sum(r.node_hours for r in records),
        dollars=sum(r.dollars for r in records),
        reserved_gpu_hours=sum(r.reserved_gpu_hours for r in records),
        reserved_dollars=sum(r.reserved_dollars for r in records),
        launches=sum(r.launches for r in records),
        unpriced_launches=sum(r.unpriced_launches for r in records),
    )
