"""Each finished job weighs on its team's factor by the GPU-hours it ran (Store.finished_jobs, through
build_snapshot): 400 h of honest 1-GPU jobs do not outweigh 50 h of under-stated 64-GPU ones, which
held far more capacity back. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from overcast.scheduler.estimates import PROVISIONING_HOURS
from overcast.store import JobState, LaunchTerms, Store
from tests.control.estimates_harness import TERMS, Clock, H, past, snapshot
from tests.control.harness import job

__all__ = ["past"]  # the fixture


def gang(
    store: Store,
    clock: Clock,
    team: str,
    declared: float,
    attempts: list[tuple[float, int, int]],
    checkpoint: bool = False,
) -> str:
    """A succeeded job of ``team`` that declared ``declared`` hours; ``attempts``: each one's (hours
    worked, billed with provisioning; nodes; GPUs per node), all but the last preempted."""
    spec = job("gang", "true", expected_hours=declared, checkpoint_dir="/ckpt" if checkpoint else None)
    job_id = store.submit(team, spec).id
    for n, (hours, nodes, gpus) in enumerate(attempts, 1):
        assert store.transition(job_id, [JobState.PENDING], JobState.LAUNCHING, attempt=n, pool_id="p")
        terms = LaunchTerms("local", "on-demand", nodes, gpus, "H100" if gpus else "", 2.0)
        store.record_launch(job_id, n, "p", "local", "h", team=team, terms=terms)
        assert store.transition(job_id, [JobState.LAUNCHING], JobState.RUNNING)
        clock.now += (hours + PROVISIONING_HOURS) * H
        last = n == len(attempts)
        store.end_launch(job_id, n, "succeeded" if last else "preempted")
        assert store.transition(job_id, [JobState.RUNNING], JobState.SUCCEEDED if last else JobState.PENDING)
    return job_id


def test_under_stated_64_gpu_jobs_keep_their_factor_against_more_hours_of_honest_1_gpu_ones(past) -> None:
    """Weighed by hours (the rule this replaces) the honest jobs ran 400 of 450 h, 89%: factor 1. By
    GPU-hours the under-stated ones ran 3,200 of 3,600, and 80% of the team's GPU time ran at 10x."""
    store, clock = past
    for _ in range(5):
        gang(store, clock, "big", 1.0, [(10.0, 8, 8)])  # declared 1 h, ran 10 h on 64 GPUs
    for _ in range(40):
        gang(store, clock, "big", 10.0, [(10.0, 1, 1)])  # honest, 1 GPU
    cheat = store.submit("big", job("cheat", "true", expected_hours=0.5))
    assert _hours(store, clock.now, cheat.id) == pytest.approx(5.0)
    runs = store.finished_runs(clock.now, days=30, allowance_h=PROVISIONING_HOURS)
    assert sorted(runs["big"]) == [(1.0, 10.0)] * 40 + [(10.0, 640.0)] * 5
    # honest GPU-hours lower it once they are 80% of the team's: 12,800 of 16,000
    for _ in range(3):
        gang(store, clock, "big", 10.0, [(10.0, 8, 8)])  # 1,920 more: 2,320 of 5,520, 42%
    assert _hours(store, clock.now, cheat.id) == pytest.approx(5.0)
    for _ in range(17):
        gang(store, clock, "big", 10.0, [(10.0, 8, 8)])  # 13,200 of 16,400, 80.5%
    assert _hours(store, clock.now, cheat.id) == 0.5


def test_gpu_hours_sum_each_counted_attempt_at_its_own_size(past) -> None:
    store, clock = past
    gang(store, clock, "ml", 2.0, [(3.0, 2, 8), (5.0, 4, 8)])  # restarts: the last attempt, 5 h x 32
    gang(store, clock, "ml", 2.0, [(3.0, 2, 8), (5.0, 4, 8)], checkpoint=True)  # 3 h x 16 + 5 h x 32
    gang(store, clock, "cpu", 1.0, [(2.0, 3, 0)])  # a node without GPUs counts as one
    runs = store.finished_runs(clock.now, days=30, allowance_h=PROVISIONING_HOURS)
    assert sorted(runs["ml"]) == pytest.approx([(2.5, 160.0), (4.0, 208.0)])
    assert runs["cpu"] == pytest.approx([(2.0, 6.0)])
    assert TERMS.nodes * TERMS.gpus_per_node == 1  # the other estimates tests: GPU-hours are hours


def _hours(store: Store, now: float, job_id: str) -> float:
    """The job's expected_hours as decide() sees it."""
    return {p.id: p for p in snapshot(store, now).pending}[job_id].spec.expected_hours
