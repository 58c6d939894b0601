"""GPU-hours and dollars from the launch records: per team, pool, provider or job, over a time window.

A launch (one attempt of a job on one pool) is billed from ``launched_at`` to ``ended_at`` (the
backend's event time when it reported one), a running one up to now, at the nodes, GPUs and list price
frozen when it launched. A window [since, until) counts only the part of each launch inside it. The
sums, their order and the paging run in the database (one GROUP BY for the page, one sum for the
total), so a long history is neither read into Python nor sent whole.
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
    rows: list[UsageRecord]  # most dollars (spend + reserved value) first, then GPU-hours, then key
    total: UsageRecord  # key None; over every row, not only this page's
    offset: int = 0  # rows skipped before this page
    next_offset: int | None = None  # where the next page starts; None: this page is the last


class UsageMethods:
    clock: Callable[[], float]
    _read: Callable[[], AbstractContextManager[Connection]]

    def usage(
        self, since: float, until: float, *, by: str = "team", team: str | None = None,
        limit: int | None = None, offset: int = 0,
    ) -> UsageReport:  # fmt: skip
        """GPU-hours and dollars over [since, until) grouped ``by`` team/pool/provider/job; ``team``
        counts only that team's launches (a team token's view). ``limit``/``offset``: one page of the
        rows in their stable order (None: all). Raises ValueError on a bad window, key or page."""
        if by not in _KEYS:
            raise ValueError(f"unknown grouping {by!r}; use one of {', '.join(USAGE_BY)}")
        if not since < until:
            raise ValueError(f"since ({since}) must be before until ({until})")
        if offset < 0 or (limit is not None and limit < 1):
            raise ValueError(f"bad page: limit {limit}, offset {offset}")
        c = launches.c
        now = self.clock()
        start = case((c.launched_at > since, c.launched_at), else_=since)
        end_or_now = func.coalesce(c.ended_at, now)
        end = case((end_or_now < until, end_or_now), else_=until)
        node_s = case((end > start, end - start), else_=0.0) * c.nodes
        reserved = c.purchase == RESERVED
        price_s = node_s * c.price_per_node_hour
        sums = (
            func.count().label("launches"),
            func.sum(case((c.price_per_node_hour.is_(None), 1), else_=0)).label("unpriced"),
            func.sum(node_s).label("node_s"),
            func.sum(node_s * c.gpus_per_node).label("gpu_s"),
            func.sum(case((reserved, node_s * c.gpus_per_node), else_=0.0)).label("reserved_gpu_s"),
            func.sum(case((reserved, 0.0), else_=price_s)).label("dollars_s"),
            func.sum(case((reserved, price_s), else_=0.0)).label("reserved_dollars_s"),
        )
        where = [c.launched_at < until, or_(end_or_now > since, c.launched_at >= since)]
        if team is not None:
            where.append(c.team == team)
        key = _KEYS[by]
        # The page's order, in SQL so LIMIT/OFFSET page it stably: worth (spend + reserved value),
        # GPU-hours, then the key (NULL, a launch from before 0004, first on both databases).
        rows_query = (
            select(key.label("key"), *sums)
            .where(*where)
            .group_by(key)
            .order_by(
                func.coalesce(func.sum(price_s), 0.0).desc(), func.sum(node_s * c.gpus_per_node).desc(),
                key.is_not(None), key,
            )
            .offset(offset)
        )  # fmt: skip
        if limit is not None:
            rows_query = rows_query.limit(limit + 1)  # one more: is there a next page?
        with self._read() as conn:
            rows = [_record(g.key, g) for g in conn.execute(rows_query)]
            total = _record(None, conn.execute(select(*sums).where(*where)).one())
        more = limit is not None and len(rows) > limit
        next_offset = offset + limit if more and limit is not None else None
        return UsageReport(since, until, by, team, rows[:limit], total, offset, next_offset)


def _record(key: str | None, g: Any) -> UsageRecord:
    return UsageRecord(
        key,
        gpu_hours=(g.gpu_s or 0.0) / 3600,
        node_hours=(g.node_s or 0.0) / 3600,
        dollars=(g.dollars_s or 0.0) / 3600,
        reserved_gpu_hours=(g.reserved_gpu_s or 0.0) / 3600,
        reserved_dollars=(g.reserved_dollars_s or 0.0) / 3600,
        launches=int(g.launches or 0),
        unpriced_launches=int(g.unpriced or 0),
    )
