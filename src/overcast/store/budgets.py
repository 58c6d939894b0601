"""Team budgets: list-price dollars a team may spend per UTC calendar month, set by an admin.

Spend is ``usage()``'s ``dollars`` (on-demand and spot launches at the list price frozen at launch);
reserved use is already paid for and never counts. The scheduler gets what each team has left
(``control/snapshot.py``) and keeps new list-price launches within it (``scheduler/budget.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, select, update

from overcast.store.tables import teams
from overcast.store.usage import UsageReport


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    team: str
    monthly_dollars: float | None  # None: no budget
    month_start: float  # epoch seconds: the current UTC calendar month began
    spent: float  # list-price dollars since month_start (running launches up to now)
    remaining: float | None  # monthly_dollars - spent (negative when over); None without a budget


def month_start(now: float) -> float:
    """Epoch seconds of 00:00 UTC on the first day of ``now``'s month."""
    day = datetime.fromtimestamp(now, UTC)
    return day.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def check_budget(monthly_dollars: float | None) -> None:
    """Raise ValueError unless the budget is None (no budget) or a finite number >= 0."""
    if monthly_dollars is not None and not (math.isfinite(monthly_dollars) and monthly_dollars >= 0):
        raise ValueError(f"a monthly budget is a finite number of dollars >= 0, not {monthly_dollars!r}")


class BudgetMethods:
    clock: Callable[[], float]
    _write: Callable[[], AbstractContextManager[Connection]]
    _read: Callable[[], AbstractContextManager[Connection]]
    usage: Callable[..., UsageReport]

    def set_budget(self, team: str, monthly_dollars: float | None) -> bool:
        """Set (None: clear) the team's monthly budget; False when there is no such team."""
        check_budget(monthly_dollars)
        with self._write() as conn:
            result = conn.execute(
                update(teams).where(teams.c.name == team).values(monthly_budget=monthly_dollars)
            )
        return result.rowcount == 1

    def budgets(self) -> dict[str, float]:
        """Every team's monthly budget, teams without one left out."""
        query = select(teams.c.name, teams.c.monthly_budget).where(teams.c.monthly_budget.is_not(None))
        with self._read() as conn:
            return {name: float(dollars) for name, dollars in conn.execute(query)}

    def month_spend(self, now: float, only: Iterable[str] | None = None) -> dict[str, float]:
        """List-price dollars each team spent since its month began (``now``'s UTC month): one usage
        query; ``only`` keeps those teams (one: filtered in the database)."""
        wanted = None if only is None else set(only)
        team = next(iter(wanted)) if wanted is not None and len(wanted) == 1 else None
        since = month_start(now)
        if not now > since:
            return {}  # the month's first instant: nothing spent yet
        report = self.usage(since, now, by="team", team=team)
        return {
            r.key: r.dollars for r in report.rows if r.key is not None and (wanted is None or r.key in wanted)
        }

    def budget_status(self, team: str) -> BudgetStatus | None:
        """The team's budget and this month's spend; None when there is no such team."""
        with self._read() as conn:
            row = conn.execute(select(teams.c.monthly_budget).where(teams.c.name == team)).first()
        if row is None:
            return None
        now = self.clock()
        spent = self.month_spend(now, [team]).get(team, 0.0)
        budget = row.monthly_budget
        remaining = None if budget is None else budget - spent
        return BudgetStatus(team, budget, month_start(now), spent, remaining)
