"""Team budgets through the real control loop, store and local backend: a team past its month's budget
waits with the reason while another team runs on the same list-price pool; a raised budget applies
once the loop reads budgets again; the snapshot's money left is current between reads."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from overcast.backends.local import LocalCluster
from overcast.control.snapshot import TeamBudgetCache
from overcast.store import JobState, LaunchTerms, Store, month_start
from tests.control.harness import job, make_loop, run_until, state

H = 3600.0


def _spent_earlier_this_month(store: Store, team: str, dollars_per_hour: float) -> None:
    """A finished on-demand launch of ``team`` over the last hour (from the month's start if later)."""
    now = time.time()
    clock = store.clock
    store.clock = lambda: max(month_start(now), now - H)
    terms = LaunchTerms("od-local", "on-demand", 1, 1, "H100", dollars_per_hour)
    store.record_launch(
        f"j-{team}-before", 1, "od-local/local/-/x/on-demand", "local", "h", team=team, terms=terms
    )
    store.clock = lambda: now
    store.end_launch(f"j-{team}-before", 1, "succeeded")
    store.clock = clock


def test_a_team_over_budget_waits_while_another_runs_on_the_same_list_price_pool(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    for team in ("ml", "vision"):
        store.create_team(team)
    _spent_earlier_this_month(store, "ml", 1_000_000.0)  # over $20 even a second into a new month
    assert store.set_budget("ml", 20.0)
    loop = make_loop(tmp_path, store, [LocalCluster("od-local", nodes=2, price_per_node_hour=3.0)])
    ml = store.submit("ml", job("ml-train", "sleep 20"))
    vision = store.submit("vision", job("vision-train", "sleep 20"))
    try:
        run_until(loop, lambda: state(store, vision.id).state is JobState.RUNNING)
        loop.tick()
        waiting = state(store, ml.id)
        assert waiting.state is JobState.PENDING  # though the pool has a node free
        assert re.fullmatch(
            r"team ml budget: -\$[0-9.,]+ left this month, job would cost ~\$3\.00", waiting.reason
        )
        assert any(e.kind == "waiting" and e.detail == waiting.reason for e in store.events(job_id=ml.id))
        assert store.budget_status("ml").remaining < 0
        store.set_budget(
            "ml", store.budget_status("ml").spent + 1000.0
        )  # read again within 30 s: not this tick
        loop.tick()
        assert state(store, ml.id).state is JobState.PENDING
        loop.budgets.ttl = 0.0  # as if 30 s had passed
        run_until(loop, lambda: state(store, ml.id).state is JobState.RUNNING)
        assert state(store, ml.id).pool_id == state(store, vision.id).pool_id
    finally:
        for record in (ml, vision):
            store.request_cancel(record.id)
        run_until(loop, lambda: all(state(store, r.id).state.terminal for r in (ml, vision)))
        store.close()


def test_money_left_is_current_between_reads_and_read_again_when_a_month_begins(tmp_path: Path) -> None:
    """Between reads, running jobs' list-price use since the read is taken off (reserved use is not)."""
    from tests.scheduler.builders import Purchase, make_job, make_pool

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_team("ml")
    store.set_budget("ml", 100.0)
    dear, reserved = make_pool("aws", price=30.0), make_pool("oci", purchase=Purchase.RESERVED, price=50.0)
    now = month_start(time.time()) + 5 * H  # no launches: nothing spent this month
    running = [
        make_job("a").team("ml").nodes(2).running(dear, started_at=now - H),
        make_job("b").team("ml").running(reserved, started_at=now - H),
        make_job("c").team("other").running(dear, started_at=now - H),
    ]
    cache = TeamBudgetCache()
    assert cache.left(store, now, running, [dear, reserved]) == {"ml": 100.0}
    store.set_budget("ml", 500.0)  # not read again yet
    # 18 s of 2 nodes at $30 an hour since the read: $0.30
    assert cache.left(store, now + 18, running, [dear, reserved]) == pytest.approx({"ml": 99.7})
    assert cache.left(store, now + 31, [], [dear, reserved]) == {"ml": 500.0}  # past the ttl
    next_month = month_start(now + 40 * 24 * H)
    store.set_budget("ml", 7.0)
    assert cache.left(store, next_month + 1, [], []) == {"ml": 7.0}  # a new month: read at once
