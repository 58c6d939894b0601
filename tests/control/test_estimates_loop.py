"""Corrected estimates in the real control loop on the local backend: a team declaring the minimum
expected_hours does not jump an honest job however far its jobs ran past it (no factor cap); a
requeued job that resumes is not priced again for the hours it already ran; and consolidation prices
a running job as it would be once pending again, so a move never strands it on its team's budget."""

from __future__ import annotations

import time
from pathlib import Path

from overcast.backends.local import LocalCluster
from overcast.store import JobState, LaunchTerms, Store, month_start
from tests.control.estimates_harness import DAY, Clock, H, attempt, cancel_all, history, told
from tests.control.harness import job, make_loop, run_until, state

FREE = LaunchTerms("local", "reserved", 1, 1, "H100", 0.0)  # history that costs nothing this month


def test_a_team_declaring_the_minimum_does_not_jump_an_honest_job(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    clock = Clock(time.time() - 2 * DAY)
    store.clock = clock
    history(store, clock, "fast", 0.001, 4.0, 5)  # ran 4000x what they declared
    history(store, clock, "honest", 1.0, 1.0, 5)
    store.clock = time.time
    loop = make_loop(tmp_path, store, [LocalCluster("azure-local", nodes=1, price_per_node_hour=2.0)])
    cheat = store.submit("fast", job("cheat", "sleep 20", expected_hours=0.001))
    fair = store.submit("honest", job("fair", "sleep 20", expected_hours=1.0))
    try:
        run_until(loop, lambda: state(store, fair.id).state is JobState.RUNNING)
        assert state(store, cheat.id).state is JobState.PENDING
        # the event tells the real factor
        assert told(store, cheat.id) == ["team fast's jobs ran 4,000x their expected_hours: ordered as 4 h"]
    finally:
        cancel_all(loop, store, cheat, fair)


def test_a_resuming_job_is_not_priced_again_for_the_hours_it_already_ran(tmp_path: Path) -> None:
    """1 h declared, 30 h of checkpointed work behind it: what is left ($2) fits $50, not $62."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_team("ml")
    clock = Clock(month_start(time.time()) - 5 * DAY)  # last month: nothing spent this month
    store.clock = clock
    ckpt = str(tmp_path / "ck")
    rec = store.submit("ml", job("resumes", "sleep 20", expected_hours=1.0, checkpoint_dir=ckpt))
    attempt(store, clock, rec.id, 1, 30.0, "preempted")
    store.clock = time.time
    assert store.set_budget("ml", 50.0)
    loop = make_loop(tmp_path, store, [LocalCluster("od-local", nodes=1, price_per_node_hour=2.0)])
    try:
        run_until(loop, lambda: state(store, rec.id).state is JobState.RUNNING)
    finally:
        cancel_all(loop, store, rec)


def test_consolidation_does_not_strand_a_job_whose_team_got_a_factor_while_it_ran(tmp_path: Path) -> None:
    """ml's 10 h job runs on the dear pool ($30 of its $40); its team then gets a factor of 5. When
    the cheap pool frees up, a move would price it at 10 h there ($20: fits) though pending again it
    is 50 h ($100): it must keep running, never be stopped for its budget."""
    off = [0.0]

    def clock() -> float:
        return time.time() + off[0]

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", clock=clock)
    store.create_team("ml")
    assert store.set_budget("ml", 40.0)
    cheap = LocalCluster("azure-local", nodes=1, price_per_node_hour=2.0)
    dear = LocalCluster("oci-local", nodes=1, price_per_node_hour=3.0)
    loop = make_loop(tmp_path, store, [cheap, dear], clock=clock)
    blocker = store.submit("other", job("blocker", "sleep 600", expected_hours=1.0))
    run_until(loop, lambda: state(store, blocker.id).state is JobState.RUNNING)
    ckpt = str(tmp_path / "ck")
    ml = store.submit("ml", job("ml", "sleep 600", expected_hours=10.0, checkpoint_dir=ckpt))
    try:
        run_until(loop, lambda: state(store, ml.id).state is JobState.RUNNING)
        assert state(store, ml.id).pool_id.endswith("oci-local")
        for _ in range(5):  # ml's other jobs, each 5x its estimate, on reserved nodes (no spend)
            rec = store.submit("ml", job("h", "true", expected_hours=1.0))
            assert store.transition(rec.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, pool_id="r")
            store.record_launch(rec.id, 1, "r", "local", "h", team="ml", terms=FREE)
            assert store.transition(rec.id, [JobState.LAUNCHING], JobState.RUNNING)
            off[0] += 5.25 * H
            store.end_launch(rec.id, 1, "succeeded")
            assert store.transition(rec.id, [JobState.RUNNING], JobState.SUCCEEDED)
            off[0] -= 5.25 * H
        store.request_cancel(blocker.id)  # the cheap pool frees up
        run_until(loop, lambda: state(store, blocker.id).state.terminal)
        off[0] += 2 * H  # 2 h into its 10: quiet for an hour (consolidation may move), caches read again
        for _ in range(20):
            loop.tick()
        got = state(store, ml.id)
        assert got.state is JobState.RUNNING and got.pool_id.endswith("oci-local"), (got.state, got.reason)
        assert "preempting" not in [e.kind for e in store.events(job_id=ml.id)]
    finally:
        cancel_all(loop, store, ml, blocker)
