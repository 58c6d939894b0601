"""Preemption reasons go to each team's own timeline: they name only that team's jobs."""

from __future__ import annotations

from overcast.scheduler.decide import decide
from tests.scheduler.builders import make_job, make_pool, make_snapshot


def test_reasons_name_only_the_teams_own_jobs() -> None:
    pool = make_pool("oci", capacity=3)
    running = [
        make_job("vis-a").gpus("H100", 8).team("vision").running(pool),
        make_job("vis-b").gpus("H100", 8).team("vision").running(pool),
        make_job("ml-old").gpus("H100", 8).team("ml").running(pool),
    ]
    pending = [make_job("ml-new").gpus("H100", 8).nodes(3).team("ml").priority(10).pending()]
    d = decide(make_snapshot([pool], pending, running))
    reasons = {p.job_id: p.reason for p in d.preempt}
    assert set(reasons) == {"vis-a", "vis-b", "ml-old"}
    for victim in ("vis-a", "vis-b"):  # vision reads: another team's job, by priority only
        assert reasons[victim] == (
            f"make room for a priority-10 job of another team on {pool.id}; {victim} has priority 0"
        )
    assert reasons["ml-old"] == f"make room for ml-new (priority 10) on {pool.id}; ml-old has priority 0"
    # ml reads its own victim by id, vision's by count
    assert d.unplaced["ml-new"] == f"waiting for {pool.id}: preempting ml-old, 2 running jobs of other teams"
    assert {p.for_job for p in d.preempt} == {"ml-new"}  # what tests and tools may read instead


def test_one_victim_of_another_team_is_counted() -> None:
    pool = make_pool("oci", capacity=1)
    running = [make_job("vis").gpus("H100", 8).team("vision").running(pool)]
    pending = [make_job("ml").gpus("H100", 8).team("ml").priority(1).pending()]
    d = decide(make_snapshot([pool], pending, running))
    assert d.unplaced["ml"] == f"waiting for {pool.id}: preempting 1 running job of another team"
    assert "ml" not in d.preempt[0].reason.split(" ")
