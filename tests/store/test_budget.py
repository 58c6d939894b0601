"""Team budgets in the store, on SQLite and PostgreSQL: set and clear, this month's list-price spend,
bad values, and migration 0005 over a database at 0004."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, inspect

from overcast.store import LaunchTerms, Store, migrate, month_start
from overcast.store.engine import make_engine
from overcast.store.tables import teams
from tests.store.test_jobs import FakeClock
from tests.store.test_usage import launch

H = 3600.0
MONTH = datetime(2026, 11, 1, tzinfo=UTC).timestamp()  # the month the tests' clock is in
ON_DEMAND = LaunchTerms("oci", "on-demand", 2, 8, "H100", 30.0)  # $60 an hour
RESERVED = LaunchTerms("oci", "reserved", 1, 8, "H100", 40.0)  # already paid: never spend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(MONTH + 10 * 24 * H)


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[Store]:
    s = Store(store_url, clock=clock)
    s.create_team("ml")
    s.create_team("vision")
    yield s
    s.close()


def test_month_start_is_the_utc_calendar_month() -> None:
    assert month_start(MONTH) == MONTH
    assert month_start(MONTH - 1) == datetime(2026, 10, 1, tzinfo=UTC).timestamp()
    assert month_start(datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()) == (
        datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    )


def test_set_clear_and_list_budgets(store: Store) -> None:
    assert store.budgets() == {}
    assert store.set_budget("ml", 50_000.0) and store.set_budget("vision", 0.0)
    assert store.budgets() == {"ml": 50_000.0, "vision": 0.0}  # zero is a budget: nothing to spend
    assert store.set_budget("ml", 20_000.0)
    assert store.set_budget("vision", None)
    assert store.budgets() == {"ml": 20_000.0}
    assert store.set_budget("nobody", 10.0) is False and store.budget_status("nobody") is None
    assert store.budgets() == {"ml": 20_000.0}


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_budget_is_a_finite_number_of_dollars_not_below_zero(store: Store, bad: float) -> None:
    with pytest.raises(ValueError, match="finite number of dollars >= 0"):
        store.set_budget("ml", bad)
    assert store.budgets() == {}


def test_spent_counts_list_price_use_since_the_month_began(store: Store, clock: FakeClock) -> None:
    def spend(job: str, terms: LaunchTerms, team: str, start: float, end: float | None) -> None:
        launch(store, clock, job, 1, terms, team=team, start=start, end=end)

    spend("j-old", ON_DEMAND, "ml", MONTH - 5 * H, MONTH - H)  # last month: not this month's spend
    spend("j-edge", ON_DEMAND, "ml", MONTH - H, MONTH + H)  # only its hour in this month counts
    spend("j-res", RESERVED, "ml", MONTH, MONTH + 5 * H)  # reserved: already paid
    spend("j-run", ON_DEMAND, "ml", MONTH + 9 * H, None)  # running: up to now
    spend("j-vis", ON_DEMAND, "vision", MONTH, MONTH + H)
    clock.now = MONTH + 10 * H
    store.set_budget("ml", 200.0)
    status = store.budget_status("ml")
    assert (status.team, status.monthly_dollars, status.month_start) == ("ml", 200.0, MONTH)
    assert status.spent == pytest.approx(60.0 + 60.0)
    assert status.remaining == pytest.approx(80.0)
    assert store.month_spend(clock.now) == pytest.approx({"ml": 120.0, "vision": 60.0})
    assert store.month_spend(clock.now, ["vision"]) == pytest.approx({"vision": 60.0})
    unbudgeted = store.budget_status("vision")
    assert (unbudgeted.monthly_dollars, unbudgeted.remaining) == (None, None)
    assert unbudgeted.spent == pytest.approx(60.0)
    clock.now = MONTH  # the first instant of a month: nothing spent yet, not a bad window
    assert store.budget_status("ml").spent == 0.0


def test_upgrade_from_0004_keeps_teams_and_gives_them_no_budget(store_url: str) -> None:
    engine = make_engine(store_url)
    migrate.upgrade(engine, "0004")
    with engine.begin() as conn:  # only the columns revision 0004 has
        conn.execute(insert(teams).values(name="ml", admin=False, created_at=0.0))
    engine.dispose()
    store = Store(store_url, clock=FakeClock(MONTH))  # migrates to head
    try:
        assert "monthly_budget" in {c["name"] for c in inspect(store.engine).get_columns("teams")}
        assert store.budgets() == {}
        status = store.budget_status("ml")
        assert (status.monthly_dollars, status.spent, status.remaining) == (None, 0.0, None)
        assert store.set_budget("ml", 1000.0) and store.budgets() == {"ml": 1000.0}
    finally:
        store.close()
