"""A running job's remaining cost counts against its team's budget whether or not its pool is listed
this tick (its backend's pools() failed): held at the price frozen at its launch."""

from __future__ import annotations

from dataclasses import replace

import pytest

from overcast.scheduler.decide import decide
from overcast.scheduler.snapshot import Decisions
from tests.scheduler.builders import make_job, make_pool, make_snapshot


def _world(list_a: bool, launch_price: float | None) -> Decisions:
    a = make_pool("aws", price=100, capacity=4)
    b = make_pool("gcp", price=100, capacity=4)
    run = make_job("r").gpus("H100", 8).team("ml").hours(9).running(a, started_at=0.0)
    pending = [make_job("new").gpus("H100", 8).team("ml").hours(3).pending()]
    snap = make_snapshot(
        [a, b] if list_a else [b], pending, [replace(run, launch_price=launch_price)], now=3600.0
    )
    snap.team_budgets = {"ml": 900.0}  # r still expected to cost $800: $100 left to commit
    return decide(snap)


@pytest.mark.parametrize("list_a", [True, False], ids=["listed", "unlisted"])
def test_the_budget_does_not_depend_on_whether_the_running_jobs_pool_is_listed(list_a: bool) -> None:
    d = _world(list_a, launch_price=100.0)
    assert not d.place, d.place
    assert d.unplaced["new"] == "team ml budget: $100 left this month, job would cost ~$300"


def test_the_frozen_price_is_what_is_held_and_a_pool_price_only_without_one() -> None:
    assert not _world(True, launch_price=None).place  # no frozen price: the listed pool's
    assert [p.job_id for p in _world(True, launch_price=0.0).place] == ["new"]  # reserved at launch
    assert [p.job_id for p in _world(False, launch_price=None).place] == ["new"]  # nothing to price it at
