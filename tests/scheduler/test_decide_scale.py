"""decide() shortcuts for large snapshots: one pass over running jobs, no needless preemption search."""

from __future__ import annotations

import pytest

import overcast.scheduler.decide as decide_module
from overcast.scheduler.decide import _index, decide
from tests.scheduler.builders import make_job, make_pool, make_snapshot


def test_index_groups_running_jobs_by_pool_in_order_and_counts_the_larger_use() -> None:
    under = make_pool("aws", capacity=10, used=1)  # the pool reports less than our jobs hold
    over = make_pool("oci", capacity=10, used=6)  # the pool reports more (someone else's nodes)
    gone = make_pool("gcp", capacity=10)  # running jobs on a pool no longer in the snapshot are dropped
    running = [
        make_job("a1").gpus("H100", 8).nodes(2).running(under),
        make_job("o1").gpus("H100", 8).nodes(1).running(over),
        make_job("g1").gpus("H100", 8).nodes(4).running(gone),
        make_job("a2").gpus("H100", 8).nodes(3).running(under),
    ]
    index, by_pool = _index(make_snapshot([under, over], [], running))
    pos = index.position_of
    assert {p: [r.id for r in jobs] for p, jobs in by_pool.items()} == {
        pos[under.id]: ["a1", "a2"],
        pos[over.id]: ["o1"],
    }
    assert index.free[pos[under.id]] == 10 - 5  # our 2 + 3 nodes, not the reported 1
    assert index.free[pos[over.id]] == 10 - 6  # the reported 6, not our 1


def test_no_preemption_search_when_no_running_job_has_a_lower_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real = decide_module.find_eviction

    def counting(job, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(job.id)
        return real(job, *args, **kwargs)

    monkeypatch.setattr(decide_module, "find_eviction", counting)
    pool = make_pool("oci", capacity=4)
    running = [make_job(f"r{i}").gpus("H100", 8).nodes(1).priority(3).running(pool) for i in range(4)]
    pending = [
        make_job(f"p{i}").gpus("H100", 8).nodes(1 + i % 2).priority(3 - i % 2).pending() for i in range(6)
    ]
    d = decide(make_snapshot([pool], pending, running))
    assert calls == [] and d.preempt == [] and set(d.unplaced) == {f"p{i}" for i in range(6)}

    # one running job of priority 2: the priority-3 jobs search (p0 takes r0's node, p2 finds nothing
    # left, so p4, asking the same, is skipped); the priority-2 jobs never search
    running[0] = make_job("r0").gpus("H100", 8).nodes(1).priority(2).running(pool)
    d = decide(make_snapshot([pool], pending, running))
    assert calls == ["p0", "p2"]
    assert [p.job_id for p in d.preempt] == ["r0"]
    assert d.unplaced["p0"] == f"waiting for {pool.id}: preempting r0"
