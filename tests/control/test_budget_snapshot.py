"""What build_snapshot hands the budget for running jobs, from the store's launch records: the price
frozen at launch holds a job's remaining cost even in a tick its pool is not listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from overcast.control.runtime import Runtime
from overcast.control.snapshot import TeamBudgetCache, build_snapshot
from overcast.placement.pool import Pool
from overcast.scheduler.decide import decide
from overcast.scheduler.snapshot import Snapshot
from overcast.store import JobState, LaunchTerms, Store, month_start
from tests.control.harness import job
from tests.scheduler.builders import make_pool

H = 3600.0
T0 = month_start(1_000_000_000.0) + 24 * H  # a day into a month


def _store(tmp_path: Path, budget: float) -> tuple[Store, list[float]]:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_team("ml")
    store.set_budget("ml", budget)
    clock = [T0]
    store.clock = lambda: clock[0]
    return store, clock


def _launch(store: Store, job_id: str, attempt: int, pool: Pool) -> None:
    """What apply_place does: claim the job for the attempt, then record the launch's frozen terms."""
    assert store.transition(
        job_id, [JobState.PENDING], JobState.LAUNCHING, attempt=attempt, pool_id=pool.id,
        backend=pool.backend, nodes=1,
    )  # fmt: skip
    terms = LaunchTerms(
        pool.provider, str(pool.purchase), 1, pool.gpus_per_node, pool.accelerator, pool.price_per_node_hour
    )
    store.record_launch(job_id, attempt, pool.id, pool.backend, "h", team="ml", terms=terms)


def _snapshot(store: Store, now: float, pools: list[Pool]) -> Snapshot:
    """The snapshot of a tick where no backend listed the running job's pool (pools() failed);
    ``pools``: what the other backends listed."""
    snap = build_snapshot(Runtime(store, {}, Path(".")), now, {}, TeamBudgetCache(ttl=0.0))
    snap.pools = pools
    return snap


def test_a_running_jobs_cost_is_held_at_its_frozen_price_while_its_pool_is_unlisted(tmp_path: Path) -> None:
    store, clock = _store(tmp_path, budget=1000.0)
    gone = make_pool("aws", price=100, capacity=4, gpus=1)
    other = make_pool("gcp", price=100, capacity=4, gpus=1)
    r = store.submit("ml", job("r", "sleep 1", expected_hours=9.0))
    _launch(store, r.id, 1, gone)
    assert store.transition(r.id, [JobState.LAUNCHING], JobState.RUNNING)
    clock[0] += H  # ran 1 h: $100 spent, 8 h ($800) still expected
    assert store.open_launches()[(r.id, 1)].billed_per_node_hour == 100.0
    store.submit("ml", job("new", "sleep 1", expected_hours=3.0))  # $300: more than the $100 left
    snap = _snapshot(store, clock[0], [other])
    assert [(j.id, j.launch_price) for j in snap.running] == [(r.id, 100.0)]
    assert snap.team_budgets == pytest.approx({"ml": 900.0})
    d = decide(snap)
    assert not d.place, d.place
    [why] = d.unplaced.values()
    assert why == "team ml budget: $100 left this month, job would cost ~$300"


def test_the_cache_charges_use_since_its_read_at_the_frozen_price_not_zero(tmp_path: Path) -> None:
    store, clock = _store(tmp_path, budget=1000.0)
    gone = make_pool("aws", price=100, capacity=4, gpus=1)
    r = store.submit("ml", job("r", "sleep 1", expected_hours=9.0))
    _launch(store, r.id, 1, gone)
    assert store.transition(r.id, [JobState.LAUNCHING], JobState.RUNNING)
    cache = TeamBudgetCache(ttl=60.0)
    runtime = Runtime(store, {}, Path("."))
    assert build_snapshot(runtime, clock[0], {}, cache).team_budgets == {"ml": 1000.0}
    clock[0] += 36.0  # 0.01 h at $100 since the read, with no pool listed
    assert build_snapshot(runtime, clock[0], {}, cache).team_budgets == pytest.approx({"ml": 999.0})


def test_a_relaunched_attempts_expected_cost_is_held_while_it_launches(tmp_path: Path) -> None:
    """started_at stays the last attempt's until the new one runs: the snapshot starts the relaunch
    at its launch, so its full expected cost is held and no other job commits that money."""
    store, clock = _store(tmp_path, budget=1250.0)
    pool = make_pool("aws", price=100, capacity=4, gpus=1)
    a = store.submit("ml", job("a", "sleep 1", expected_hours=4.0))
    _launch(store, a.id, 1, pool)
    assert store.transition(a.id, [JobState.LAUNCHING], JobState.RUNNING)
    clock[0] += 5 * H  # ran 5 h ($500), then lost, requeued and placed again
    assert store.transition(a.id, [JobState.RUNNING], JobState.PENDING)
    store.end_launch(a.id, 1, "lost")
    _launch(store, a.id, 2, pool)
    relaunched = clock[0]
    clock[0] += 36.0  # still launching: $1 spent on attempt 2, ~$399 more expected
    store.submit("ml", job("b", "sleep 1", expected_hours=4.0))  # $400
    snap = _snapshot(store, clock[0], [pool])
    assert [(r.attempt, r.started_at) for r in snap.running] == [(2, relaunched)]
    assert snap.team_budgets == pytest.approx({"ml": 1250.0 - 501.0})
    d = decide(snap)
    assert not d.place, d.place  # $749 - $399 = $350 left: b waits
    assert list(d.unplaced.values()) == ["team ml budget: $350 left this month, job would cost ~$400"]
    clock[0] += 24.0
    assert store.transition(a.id, [JobState.LAUNCHING], JobState.RUNNING)  # from here on its own start
    assert [r.started_at for r in _snapshot(store, clock[0], [pool]).running] == [clock[0]]
