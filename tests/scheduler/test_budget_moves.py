"""Consolidation and team budgets: a budgeted team's running job is moved to a cheaper pool only where
the team can afford to start it again (pending, it is priced at its full expected cost), since running
jobs are never stopped for a budget; zero-price targets are always fine."""

from __future__ import annotations

import pytest

from overcast.placement.pool import Pool, Purchase
from overcast.scheduler.decide import decide
from overcast.scheduler.snapshot import PendingJob, RunningJob, Snapshot
from tests.scheduler.builders import make_job, make_pool, make_snapshot

H = 3600.0


def _snapshot(pools: list[Pool], running: list[RunningJob], budget: float | None, now: float) -> Snapshot:
    snap = make_snapshot(pools, [], running, now=now)
    snap.team_budgets = {} if budget is None else {"ml": budget}
    return snap


def _requeued(run: RunningJob) -> PendingJob:
    return PendingJob(spec=run.spec, id=run.id, submitted_at=0.0)


def _job(name: str, pool: Pool, started_at: float = 0.0) -> RunningJob:
    return (
        make_job(name).gpus("H100", 8).team("ml").hours(10).checkpoint().running(pool, started_at=started_at)
    )


@pytest.mark.parametrize(
    ("budget", "moved"),
    [(450.0, False), (500.0, True), (None, True)],
    ids=["cannot-afford-a-restart", "can", "no-budget"],
)
def test_a_budgeted_job_moves_only_where_it_can_start_again(budget: float | None, moved: bool) -> None:
    dear, cheap = make_pool("aws", price=100, capacity=1), make_pool("gcp", price=50, capacity=1)
    run = _job("r", dear)
    now = 2 * H  # 8 h of 10 still to run: $800 more where it is, $500 for all 10 h on the cheap pool
    d1 = decide(_snapshot([dear, cheap], [run], budget, now))
    assert [p.job_id for p in d1.preempt] == (["r"] if moved else []), d1.preempt
    if moved:  # next tick it is pending again, nothing else changed: it starts on the cheap pool
        tick2 = _snapshot([dear, cheap], [], budget, now + 60)
        tick2.pending = [_requeued(run)]
        d2 = decide(tick2)
        assert [(p.job_id, p.pool_id) for p in d2.place] == [("r", cheap.id)], d2.unplaced


def test_a_move_to_a_zero_price_pool_needs_no_money() -> None:
    dear = make_pool("aws", price=100, capacity=1)
    reserved = make_pool("oci", purchase=Purchase.RESERVED, price=80, capacity=1)
    d = decide(_snapshot([dear, reserved], [_job("r", dear)], -50.0, 2 * H))  # already over budget
    assert [p.job_id for p in d.preempt] == ["r"]


def test_one_cycle_moves_only_what_the_team_can_restart() -> None:
    """Each alone fits ($800 - the other's $200 held >= $500); both would need $1,000: one moves, and
    the next tick it starts again while the other still runs."""
    dear, cheap = make_pool("aws", price=100, capacity=2), make_pool("gcp", price=50, capacity=2)
    running = [_job("a", dear), _job("b", dear)]
    now = 8 * H  # 2 h of 10 left each: $200 held each
    d1 = decide(_snapshot([dear, cheap], running, 800.0, now))
    [moved] = [p.job_id for p in d1.preempt]
    tick2 = _snapshot([dear, cheap], [r for r in running if r.id != moved], 800.0, now + 60)
    tick2.pending = [_requeued(next(r for r in running if r.id == moved))]
    d2 = decide(tick2)
    assert [(p.job_id, p.pool_id) for p in d2.place] == [(moved, cheap.id)], d2.unplaced
