"""decide() on small hand-made snapshots: placement order, preemption choices, avoid_pools, fair share."""

from __future__ import annotations

from overcast.placement.pool import Purchase
from overcast.scheduler.decide import decide
from overcast.scheduler.queue import order_queue
from overcast.scheduler.snapshot import Quota
from tests.scheduler.builders import make_job, make_pool, make_snapshot


def test_places_in_priority_order_on_the_cheapest_pool_with_room() -> None:
    reserved = make_pool("oci", purchase=Purchase.RESERVED, price=80, capacity=4)
    public = make_pool("aws", price=98)
    pending = [
        make_job("low").gpus("H100", 8).nodes(3).pending(submitted_at=1),
        make_job("high").gpus("H100", 8).nodes(3).priority(5).pending(submitted_at=2),
    ]
    d = decide(make_snapshot([reserved, public], pending))
    assert {(p.job_id, p.pool_id) for p in d.place} == {("high", reserved.id), ("low", public.id)}
    assert d.unplaced == {}
    assert set(d.step_seconds) == {
        "1-order-queue",
        "2-free-capacity",
        "3-place",
        "4-preempt",
        "5-consolidate",
    }
    assert d.seconds >= sum(d.step_seconds.values()) * 0.5


def test_running_jobs_use_capacity_and_are_not_placed_again() -> None:
    pool = make_pool("oci", capacity=4)
    running = [make_job("r").gpus("H100", 8).nodes(3).running(pool)]
    pending = [
        make_job("r").gpus("H100", 8).nodes(3).pending(),  # the same id, still listed as pending
        make_job("new").gpus("H100", 8).nodes(2).pending(),
    ]
    d = decide(make_snapshot([pool], pending, running))
    assert d.place == []
    assert d.unplaced["r"] == "already running"
    assert "none with 2 free node(s) in one pool (most free: 1)" in d.unplaced["new"]


def test_preemption_takes_lowest_priority_newest_first_and_no_more_than_needed() -> None:
    pool = make_pool("oci", capacity=6)
    running = [
        make_job("p1-old").gpus("H100", 8).nodes(2).priority(1).running(pool, started_at=10),
        make_job("p0-old").gpus("H100", 8).nodes(2).priority(0).running(pool, started_at=20),
        make_job("p0-new").gpus("H100", 8).nodes(2).priority(0).running(pool, started_at=30),
    ]
    urgent = make_job("urgent").gpus("H100", 8).nodes(2).priority(9).pending()
    d = decide(make_snapshot([pool], [urgent], running))
    assert [p.job_id for p in d.preempt] == ["p0-new"]
    assert d.preempt[0].reason == (f"make room for urgent (priority 9) on {pool.id}; p0-new has priority 0")
    assert d.unplaced["urgent"] == f"waiting for {pool.id}: preempting p0-new"


def test_minimal_victim_set_drops_a_victim_made_redundant_by_a_bigger_one() -> None:
    pool = make_pool("oci", capacity=5)
    running = [
        make_job("small").gpus("H100", 8).nodes(1).priority(0).running(pool, started_at=30),
        make_job("big").gpus("H100", 8).nodes(4).priority(0).running(pool, started_at=20),
    ]
    urgent = make_job("urgent").gpus("H100", 8).nodes(4).priority(9).pending()
    d = decide(make_snapshot([pool], [urgent], running))
    assert [p.job_id for p in d.preempt] == ["big"], "small alone is not enough, and big alone is"


def test_preemption_picks_the_pool_whose_victims_matter_least_then_lose_fewest_nodes() -> None:
    cheap = make_pool("aws", price=10, capacity=2)
    dear = make_pool("oci", price=90, capacity=2)
    mid = make_pool("gcp", price=50, capacity=2)
    running = [
        make_job("cheap-p1").gpus("H100", 8).nodes(2).priority(1).running(cheap),
        make_job("dear-p0").gpus("H100", 8).nodes(2).priority(0).running(dear),
        make_job("mid-p0-a").gpus("H100", 8).nodes(1).priority(0).running(mid),
        make_job("mid-p0-b").gpus("H100", 8).nodes(1).priority(0).running(mid),
    ]
    urgent = make_job("urgent").gpus("H100", 8).nodes(2).priority(9).pending()
    d = decide(make_snapshot([cheap, dear, mid], [urgent], running))
    assert [p.job_id for p in d.preempt] == ["dear-p0"], "priority 0 beats the cheaper pool; 1 job beats 2"


def test_an_over_capacity_pool_preempts_enough_to_fit_in_one_cycle() -> None:
    pool = make_pool("oci", capacity=3)  # shrunk under its running jobs: 4 nodes run on 3
    running = [
        make_job("old").gpus("H100", 8).nodes(2).priority(0).running(pool, started_at=10),
        make_job("new").gpus("H100", 8).nodes(2).priority(0).running(pool, started_at=20),
    ]
    urgent = make_job("urgent").gpus("H100", 8).nodes(2).priority(9).pending()
    d = decide(make_snapshot([pool], [urgent], running))
    assert sorted(p.job_id for p in d.preempt) == ["new", "old"], "2 nodes free only when both stop"
    peer = make_job("peer").gpus("H100", 8).nodes(2).priority(0).pending()
    assert "(most free: 0)" in decide(make_snapshot([pool], [peer], running)).unplaced["peer"]


def test_preemption_frees_quota_when_the_pool_itself_is_unlimited() -> None:
    pool = make_pool("aws")  # no capacity limit: only the quota stops the urgent job
    running = [
        make_job("small").gpus("H100", 8).nodes(1).priority(0).running(pool, started_at=30),
        make_job("big").gpus("H100", 8).nodes(2).priority(0).running(pool, started_at=20),
    ]
    urgent = make_job("urgent").gpus("H100", 8).nodes(2).priority(9).pending()
    d = decide(make_snapshot([pool], [urgent], running, [Quota("aws", None, 32)]))
    assert [p.job_id for p in d.preempt] == ["small"], "8 of 32 GPUs left, 16 needed: the newest frees 8"
    assert d.unplaced["urgent"] == f"waiting for {pool.id}: preempting small"


def test_no_preemption_of_equal_priority_and_held_nodes_are_not_given_away() -> None:
    pool = make_pool("oci", capacity=4)
    running = [make_job("peer").gpus("H100", 8).nodes(3).priority(5).running(pool)]
    pending = [make_job("same").gpus("H100", 8).nodes(2).priority(5).pending()]
    d = decide(make_snapshot([pool], pending, running))
    assert d.preempt == [] and "same" in d.unplaced

    running = [make_job("victim").gpus("H100", 8).nodes(3).priority(0).running(pool)]
    pending = [
        make_job("urgent").gpus("H100", 8).nodes(2).priority(5).pending(),
        make_job("filler").gpus("H100", 8).nodes(1).priority(1).pending(),
    ]
    d = decide(make_snapshot([pool], pending, running))
    assert [p.job_id for p in d.preempt] == ["victim"]
    assert d.place == [], "the one free node is held for urgent, not given to filler"


def test_avoid_pools_respected_when_another_pool_fits() -> None:
    cheap, dear = make_pool("aws", price=10), make_pool("gcp", price=20)
    job = make_job("j").gpus("H100", 8).pending(avoid_pools=frozenset({cheap.id}))
    assert decide(make_snapshot([cheap, dear], [job])).place[0].pool_id == dear.id
    only = make_job("j").gpus("H100", 8).pending(avoid_pools=frozenset({cheap.id, dear.id}))
    assert decide(make_snapshot([cheap, dear], [only])).place[0].pool_id == cheap.id


def test_quota_spans_placements_in_one_cycle() -> None:
    pools = [make_pool("aws", region="us-east-1"), make_pool("aws", region="us-west-2")]
    pending = [make_job(f"j{i}").gpus("H100", 8).pending(submitted_at=i) for i in range(3)]
    d = decide(make_snapshot(pools, pending, quotas=[Quota("aws", None, 16)]))
    assert [p.job_id for p in d.place] == ["j0", "j1"]
    assert "quota" in d.unplaced["j2"]


def test_batch_path_places_many_jobs_without_overfilling() -> None:
    pools = [
        make_pool("oci", purchase=Purchase.RESERVED, price=80, capacity=10),
        make_pool("aws", price=98, capacity=20),
    ]
    pending = [make_job(f"j{i}").gpus("H100", 8).nodes(1 + i % 4).pending(submitted_at=i) for i in range(20)]
    d = decide(make_snapshot(pools, pending), batch_threshold=5, time_budget_s=0.5)
    used = {p.id: 0 for p in pools}
    for place in d.place:
        used[place.pool_id] += place.nodes
    assert used[pools[0].id] <= 10 and used[pools[1].id] <= 20
    assert sum(used.values()) >= 28, "the solver fills most of the 30 nodes"
    assert any(p.reason.startswith("batch solver") for p in d.place)
    assert len(d.place) + len(d.unplaced) == 20


def test_fair_share_interleaves_teams_of_equal_priority() -> None:
    pool = make_pool("aws")
    pending = [make_job(f"a{i}").gpus("H100", 8).team("a").pending(submitted_at=i) for i in range(3)]
    pending += [make_job(f"b{i}").gpus("H100", 8).team("b").pending(submitted_at=10 + i) for i in range(2)]
    running = [make_job("a-run").gpus("H100", 8).team("a").running(pool)]
    order = order_queue(pending, fair_share=True, team_gpus={"a": 8})
    assert [j.id for j in order] == ["b0", "a0", "b1", "a1", "a2"]
    assert [j.id for j in order_queue(pending)] == ["a0", "a1", "a2", "b0", "b1"]
    d = decide(make_snapshot([pool], pending, running), fair_share=True)
    assert [p.job_id for p in d.place] == ["b0", "a0", "b1", "a1", "a2"]


def test_batch_path_does_not_start_long_jobs_from_the_back_of_the_queue() -> None:
    # 4 free nodes, 12 one-node jobs: the four that waited longest are short, the newest are long. The
    # solver used to value a job by its expected GPU-hours and started the long ones (regression).
    pools = [make_pool("aws", price=98, capacity=4)]
    hour = 3600.0
    old = [make_job(f"old{i}").gpus("H100", 8).hours(0.25).pending(submitted_at=i) for i in range(4)]
    new = [
        make_job(f"new{i}").gpus("H100", 8).hours(32).pending(submitted_at=10 * hour + i) for i in range(8)
    ]
    d = decide(make_snapshot(pools, new + old, now=12 * hour), batch_threshold=5, time_budget_s=0.5)
    assert sorted(p.job_id for p in d.place) == ["old0", "old1", "old2", "old3"]


def test_batch_path_within_one_wait_tier_fills_every_free_node() -> None:
    pools = [make_pool("aws", price=98, capacity=6)]
    pending = [
        make_job(f"j{i}").gpus("H100", 8).nodes(1 + i % 3).hours(2.0 ** (i % 5)).pending(submitted_at=i)
        for i in range(12)
    ]
    d = decide(make_snapshot(pools, pending, now=60.0), batch_threshold=5, time_budget_s=0.5)
    assert sum(p.nodes for p in d.place) == 6


def test_short_jobs_go_first_and_a_long_job_climbs_a_tier_per_doubling_of_its_slowdown() -> None:
    hour = 3600.0
    long_old = make_job("long-old").gpus("H100", 8).hours(32).pending(submitted_at=0)
    short_new = make_job("short-new").gpus("H100", 8).hours(1).pending(submitted_at=10 * hour)
    mid_new = make_job("mid-new").gpus("H100", 8).hours(4).pending(submitted_at=10 * hour)
    pending = [long_old, mid_new, short_new]
    # 10.5 h in: the long job's slowdown (10.5 / 32) is below the short job's (0.5 / 1): shortest first
    assert [j.id for j in order_queue(pending, now=10.5 * hour)] == ["short-new", "mid-new", "long-old"]
    # 33 h in: the long job waited its own length (tier 1), the 4 h job 23 h (tier 2), the 1 h job tier 4
    assert [j.id for j in order_queue(pending, now=33 * hour)] == ["short-new", "mid-new", "long-old"]
    # a long job that waited twice its length outranks fresh short jobs
    fresh = make_job("fresh").gpus("H100", 8).hours(1).pending(submitted_at=64 * hour)
    assert [j.id for j in order_queue([fresh, long_old], now=64.2 * hour)] == ["long-old", "fresh"]
    assert [j.id for j in order_queue(pending, order="fifo", now=33 * hour)] == [
        "long-old",
        "mid-new",
        "short-new",
    ]


def test_decide_gives_scarce_nodes_to_short_jobs_on_both_paths() -> None:
    # 2 free nodes; a 16 h job waited 1 h, two 0.5 h jobs just arrived: the short ones start
    hour = 3600.0
    pools = [make_pool("aws", price=98, capacity=2)]
    pending = [make_job("long").gpus("H100", 8).hours(16).pending(submitted_at=0)]
    pending += [make_job(f"short{i}").gpus("H100", 8).hours(0.5).pending(submitted_at=hour) for i in range(2)]
    for threshold in (200, 1):  # single-job path, batch solver
        d = decide(make_snapshot(pools, pending, now=hour + 60), batch_threshold=threshold, time_budget_s=0.5)
        assert sorted(p.job_id for p in d.place) == ["short0", "short1"]
    d = decide(make_snapshot(pools, pending, now=hour + 60), queue_order="fifo")
    assert [p.job_id for p in d.place] == ["long", "short0"]


def _move_world() -> tuple:
    reserved = make_pool("oci", purchase=Purchase.RESERVED, price=60, capacity=4, used=2)
    dear = make_pool("aws", price=98, capacity=8, used=3)
    return reserved, dear


def test_consolidation_moves_long_checkpointed_work_from_list_price_onto_idle_reserved_nodes() -> None:
    hour = 3600.0
    reserved, dear = _move_world()
    runs = [
        make_job("long").gpus("H100", 8).nodes(2).hours(8).checkpoint().running(dear, started_at=0),
        make_job("ending").gpus("H100", 8).hours(8).checkpoint().running(dear, started_at=-7 * hour),
        make_job("no-ckpt").gpus("H100", 8).hours(8).running(dear, started_at=0),  # would start over
    ]
    held = make_job("held").gpus("H100", 8).nodes(2).running(reserved, started_at=0)
    snap = make_snapshot([reserved, dear], [], [held, *runs], now=1.5 * hour)
    d = decide(snap)
    assert [p.job_id for p in d.preempt] == ["long"]
    assert d.preempt[0].reason.startswith(f"move to cheaper {reserved.id}")
    later = make_snapshot([reserved, dear], [], [held, *runs], now=7.5 * hour)
    assert decide(later).preempt == []  # half an hour left: not worth a restart
    assert decide(snap, consolidate=False).preempt == []
    # a job started on the dear pool half an hour ago: demand overflowed lately, the room is not spare
    fresh = make_job("fresh").gpus("H100", 8).hours(1).running(dear, started_at=hour)
    assert decide(make_snapshot([reserved, dear], [], [held, fresh, *runs], now=1.5 * hour)).preempt == []


def test_consolidation_waits_while_any_job_is_left_waiting_and_holds_the_room_it_takes() -> None:
    hour = 3600.0
    reserved, dear = _move_world()
    held = make_job("held").gpus("H100", 8).nodes(2).running(reserved, started_at=0)
    runs = [
        make_job(f"r{i}").gpus("H100", 8).nodes(2).hours(8).checkpoint().running(dear, started_at=0)
        for i in range(2)
    ]
    # two candidates, room for one: only one moves
    d = decide(make_snapshot([reserved, dear], [], [held, *runs], now=2 * hour))
    assert len(d.preempt) == 1
    # a 16-node gang that fits nowhere is waiting: no moves this cycle
    gang = make_job("gang").gpus("H100", 8).nodes(16).pending(submitted_at=0)
    d = decide(make_snapshot([reserved, dear], [gang], [held, *runs], now=2 * hour))
    assert d.preempt == [] and "gang" in d.unplaced
    # a pending job that takes the free reserved room leaves nothing to move into
    small = make_job("small").gpus("H100", 8).nodes(2).pending(submitted_at=0)
    d = decide(make_snapshot([reserved, dear], [small], [held, *runs], now=2 * hour))
    assert [(p.job_id, p.pool_id) for p in d.place] == [("small", reserved.id)] and d.preempt == []


def test_burst_limit_keeps_big_jobs_on_the_reservation_and_lets_small_ones_burst() -> None:
    reserved = make_pool("oci", purchase=Purchase.RESERVED, price=60, capacity=4, used=4)
    dear = make_pool("aws", price=98, capacity=16)
    big = make_job("big").gpus("H100", 8).nodes(2).hours(8).pending(submitted_at=0)  # 16 node-hours
    small = make_job("small").gpus("H100", 8).hours(2).pending(submitted_at=1)  # 2 node-hours
    wide = make_job("wide").gpus("H100", 8).nodes(8).hours(8).pending(submitted_at=2)  # no reservation fits
    for threshold in (200, 1):  # single-job path, batch solver
        d = decide(
            make_snapshot([reserved, dear], [big, small, wide]), burst_limit_node_hours=4,
            batch_threshold=threshold, time_budget_s=0.5,
        )  # fmt: skip
        assert sorted((p.job_id, p.pool_id) for p in d.place) == [("small", dear.id), ("wide", dear.id)]
        assert d.unplaced["big"].startswith("burst limit: 16 node-hours > 4")
    # without the limit the big job bursts too; with room on the reservation it goes there either way
    d = decide(make_snapshot([reserved, dear], [big, small, wide]))
    assert {p.job_id for p in d.place} == {"big", "small", "wide"}
    free = make_pool("oci", purchase=Purchase.RESERVED, price=60, capacity=4)
    d = decide(make_snapshot([free, dear], [big]), burst_limit_node_hours=4)
    assert [(p.job_id, p.pool_id) for p in d.place] == [("big", free.id)]
