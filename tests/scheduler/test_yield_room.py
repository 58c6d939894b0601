"""The yield option: a wide, long gang on the reservation gives its room to list-price overflow, and the
room is held for the jobs that take it until the gang is gone (the control loop stops asynchronously)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overcast.scheduler.decide import decide
from overcast.scheduler.snapshot import Decisions, PendingJob, RunningJob, Snapshot
from overcast.scheduler.yield_room import YieldRule
from tests.scheduler.builders import Purchase, make_job, make_pool, make_snapshot

HOUR = 3600.0
LIMIT = 64.0
RULE = {"min_nodes": 8, "min_hours_left": 32, "min_run_hours": 0.5, "fill": 0.5}
RESERVED = make_pool("oci", purchase=Purchase.RESERVED, price=60, capacity=8, used=8)
DEAR = make_pool("aws", price=98, capacity=16)


def _gang(nodes: int = 8, hours: float = 64, checkpoint: bool = True, name: str = "gang") -> RunningJob:
    job = make_job(name).gpus("H100", 8).nodes(nodes).hours(hours)
    return (job.checkpoint() if checkpoint else job).running(RESERVED, started_at=0.0)


def _smalls(n: int = 2, nodes: int = 2, team: str = "default") -> list[PendingJob]:
    job = make_job().gpus("H100", 8).nodes(nodes).hours(4).team(team)
    return [job.pending(f"s{i}", submitted_at=HOUR) for i in range(n)]


def _decide(snap: Snapshot, rule: object = RULE, limit: float | None = LIMIT) -> Decisions:
    return decide(snap, burst_limit_node_hours=limit, burst_yield=rule)


def test_a_running_gang_yields_and_the_jobs_wait_for_its_room_instead_of_starting_at_list_price() -> None:
    snap = make_snapshot([RESERVED, DEAR], _smalls(), [_gang()], now=HOUR)
    # without the option the small jobs start at list price and the gang keeps running
    plain = decide(snap, burst_limit_node_hours=LIMIT)
    assert {p.pool_id for p in plain.place} == {DEAR.id} and plain.preempt == []
    d = _decide(snap)
    assert [(p.job_id, p.for_job) for p in d.preempt] == [("gang", None)]
    assert "yields 8 nodes of" in d.preempt[0].reason
    # the gang is still there: nothing is placed on its nodes (nor at list price) this cycle
    assert d.place == []
    assert d.unplaced == {f"s{i}": f"waiting for {RESERVED.id}: room yielded by gang" for i in range(2)}
    # it needs the burst limit (back in the queue the gang must wait for the reservation)
    assert _decide(snap, limit=None).preempt == []


def test_another_teams_gang_is_not_named_to_the_jobs_that_wait() -> None:
    snap = make_snapshot([RESERVED, DEAR], _smalls(team="vision"), [_gang()], now=HOUR)
    assert set(_decide(snap).unplaced.values()) == {
        f"waiting for {RESERVED.id}: room yielded by a job of another team"
    }


def test_the_room_is_held_until_the_gang_is_gone_then_the_waiting_jobs_take_it() -> None:
    smalls = _smalls()
    # a later cycle while the gang is still stopping (the loop lists it as running): same decision
    stopping = _decide(make_snapshot([RESERVED, DEAR], smalls, [_gang()], now=HOUR + 60))
    assert stopping.place == [] and [p.job_id for p in stopping.preempt] == ["gang"]
    # gone: the gang is pending again (attempt 1) and so is a gang that has waited 200 h for 40 h of
    # work; neither is fresh, so the one the queue puts first takes the room and the jobs pay list price
    free = make_pool("oci", purchase=Purchase.RESERVED, price=60, capacity=8, used=0)
    gang = make_job("gang").gpus("H100", 8).nodes(8).hours(64).checkpoint().pending(attempt=1)
    other = (
        make_job("other").gpus("H100", 8).nodes(8).hours(40).checkpoint().pending(submitted_at=-200 * HOUR)
    )
    d = _decide(make_snapshot([free, DEAR], [gang, other, *smalls], now=HOUR + 120))
    assert {(p.job_id, p.pool_id) for p in d.place} >= {("other", free.id), ("s0", DEAR.id)}
    assert not any("yield" in why for why in d.unplaced.values())


def _held_back(waited_hours: float, attempt: int = 0) -> Decisions:
    """A 64 h gang first in FIFO order, about to start on a free reservation; two small jobs after it."""
    free = make_pool("oci", purchase=Purchase.RESERVED, price=60, capacity=8, used=0)
    gang = make_job("gang").gpus("H100", 8).nodes(8).hours(64).checkpoint()
    pending = [gang.pending(submitted_at=-waited_hours * HOUR, attempt=attempt), *_smalls()]
    snap = make_snapshot([free, DEAR], pending, now=HOUR)
    return decide(snap, burst_limit_node_hours=LIMIT, burst_yield=RULE, queue_order="fifo")


def test_a_gang_yields_only_while_fresh_so_its_extra_wait_is_bounded() -> None:
    # held back: it yields while it has waited less than its own 64 expected hours and never ran
    fresh = _held_back(10)
    assert {p.job_id for p in fresh.place} == {"s0", "s1"}
    assert fresh.unplaced["gang"].startswith("waiting for ")
    for waited, attempt in ((64, 0), (100, 0), (10_000, 0), (10, 1)):
        d = _held_back(waited, attempt)
        assert "gang" in {p.job_id for p in d.place} and d.unplaced == {}, (waited, attempt)
    # running: stopped only in its first attempt (a restarted gang is never stopped by yield again)
    for attempt, stops in ((1, ["gang"]), (2, [])):
        run = replace(_gang(), attempt=attempt)
        d = _decide(make_snapshot([RESERVED, DEAR], _smalls(), [run], now=HOUR))
        assert [p.job_id for p in d.preempt] == stops


@pytest.mark.parametrize(
    ("gang", "limit", "why"),
    [
        (_gang(checkpoint=False), LIMIT, "a stop would lose its work"),
        (_gang(nodes=4), LIMIT, "narrower than min_nodes"),
        (_gang(), 8 * 64, "8 x 64 node-hours: not above the limit"),
        (_gang(hours=33), LIMIT, "32 h left: fewer than min_hours_left"),
    ],
)
def test_only_a_checkpointed_wide_long_gang_above_the_limit_yields(
    gang: RunningJob, limit: float, why: str
) -> None:
    reserved = make_pool("oci", purchase=Purchase.RESERVED, price=60, capacity=gang.nodes, used=gang.nodes)
    snap = make_snapshot([reserved, DEAR], _smalls(n=4, nodes=1), [gang], now=HOUR)
    assert _decide(snap, {**RULE, "min_hours_left": 32.5}, limit).preempt == [], why
    assert (
        _decide(snap, {**RULE, "min_hours_left": 32.5}, limit).place
        == decide(snap, burst_limit_node_hours=limit).place
    )


def test_not_before_min_run_hours_and_not_when_the_overflow_fills_too_little() -> None:
    snap = make_snapshot([RESERVED, DEAR], _smalls(), [_gang()], now=0.25 * HOUR)
    assert _decide(snap).preempt == []  # 15 minutes into its attempt
    snap = make_snapshot([RESERVED, DEAR], _smalls(), [_gang()], now=HOUR)
    assert _decide(snap, {**RULE, "fill": 0.75}).preempt == []  # 4 of 8 nodes


def test_at_most_max_per_cycle_gangs_stop_the_one_with_most_node_hours_left_first() -> None:
    reserved = make_pool("oci", purchase=Purchase.RESERVED, price=60, capacity=24, used=24)
    gangs = [
        make_job(f"g{h}").gpus("H100", 8).nodes(8).hours(h).checkpoint().running(reserved)
        for h in (40, 80, 60)
    ]
    snap = make_snapshot([reserved, DEAR], _smalls(n=8, nodes=2), gangs, now=HOUR)
    assert [p.job_id for p in _decide(snap).preempt] == ["g80"]
    two = _decide(snap, {**RULE, "max_per_cycle": 2})
    assert [p.job_id for p in two.preempt] == ["g80", "g60"]
    assert two.place == [] and len(two.unplaced) == 8


def test_a_gang_does_not_yield_to_lower_priority_jobs() -> None:
    gang = make_job("gang").gpus("H100", 8).nodes(8).hours(64).checkpoint().priority(5).running(RESERVED)
    d = _decide(make_snapshot([RESERVED, DEAR], _smalls(), [gang], now=HOUR))
    assert d.preempt == [] and {p.pool_id for p in d.place} == {DEAR.id}


def test_jobs_the_reservation_does_not_suit_are_not_moved_there() -> None:
    a100 = make_pool("gcp", accelerator="A100", price=40, capacity=8)
    pending = [make_job(f"a{i}").gpus("A100", 8).nodes(4).hours(4).pending() for i in range(2)]
    d = _decide(make_snapshot([RESERVED, DEAR, a100], pending, [_gang()], now=HOUR))
    assert d.preempt == [] and {p.pool_id for p in d.place} == {a100.id}


def test_the_option_from_a_scenario_or_code() -> None:
    assert YieldRule.of(None) is None and YieldRule.of(False) is None
    assert YieldRule.of(True) == YieldRule()
    assert YieldRule.of("min_nodes=4 min_hours_left=40") == YieldRule(min_nodes=4, min_hours_left=40.0)
    assert YieldRule.of({"max_per_cycle": 2.0}) == YieldRule(max_per_cycle=2)
    with pytest.raises(ValueError, match="no option 'nodes'"):
        YieldRule.of("nodes=4")
    with pytest.raises(ValueError, match="fill"):
        YieldRule.of({"fill": 0})
    with pytest.raises(ValueError, match="name=value"):
        YieldRule.of("min_nodes")
    assert YieldRule.of("min_nodes=8.0") == YieldRule(min_nodes=8)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (1, "expected true, a mapping"),
        ([8], "expected true, a mapping"),
        ("max_per_cycle=inf", "max_per_cycle must be finite"),
        ({"fill": float("nan")}, "fill must be finite"),
        ("min_hours_left=inf", "min_hours_left must be finite"),
        ("min_nodes=eight", "min_nodes must be a number"),
        ({"min_nodes": True}, "min_nodes must be a number"),
        ("min_nodes=8.7", "min_nodes must be a whole number"),
    ],
)
def test_a_bad_value_is_a_value_error_that_names_burst_yield(value: object, why: str) -> None:
    with pytest.raises(ValueError, match=rf"^burst_yield: {why}"):
        YieldRule.of(value)  # type: ignore[arg-type]


# -- invariants over random worlds -------------------------------------------------------------------


HOURS = st.sampled_from([1, 4, 16, 64])
WAITED = st.sampled_from([0.0, 5.0, 500.0])


@st.composite
def worlds(draw) -> tuple[Snapshot, dict, float]:
    reserved = []
    running: list[RunningJob] = []
    for i in range(draw(st.integers(1, 2))):
        gangs = draw(
            st.lists(st.tuples(st.integers(2, 8), st.sampled_from([4, 48, 96]), st.booleans()), max_size=3)
        )
        cap = sum(n for n, _, _ in gangs) + draw(st.sampled_from([0, 0, 2, 8]))
        pool = make_pool("oci", region=f"r{i}", purchase=Purchase.RESERVED, price=60, capacity=cap)
        for k, (nodes, hours, ckpt) in enumerate(gangs):
            job = make_job(f"g{i}{k}").gpus("H100", 8).nodes(nodes).hours(hours)
            started = -draw(st.sampled_from([0.1, 1.0, 10.0])) * HOUR
            running.append((job.checkpoint() if ckpt else job).running(pool, started_at=started))
        pool.used_nodes = sum(n for n, _, _ in gangs)
        reserved.append(pool)
    dear = [
        make_pool(p, price=90 + i, capacity=draw(st.sampled_from([None, 4, 12])))
        for i, p in enumerate(("aws", "gcp"))
    ]
    pending = [
        make_job(f"p{k}").gpus("H100", 8).nodes(draw(st.integers(1, 6))).hours(draw(HOURS))
        .checkpoint().pending(submitted_at=-draw(WAITED) * HOUR)
        for k in range(draw(st.integers(0, 8)))
    ]  # fmt: skip
    rule = {
        "min_nodes": draw(st.integers(1, 6)),
        "min_hours_left": draw(st.sampled_from([1.0, 32.0])),
        "fill": draw(st.sampled_from([0.25, 0.5, 1.0])),
        "max_per_cycle": draw(st.integers(1, 2)),
    }
    return (
        make_snapshot([*reserved, *dear], pending, running, now=0.0),
        rule,
        draw(st.sampled_from([8.0, 32.0])),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_no_pool_is_double_booked_and_only_eligible_gangs_yield(world: tuple[Snapshot, dict, float]) -> None:
    snap, rule, limit = world
    d = _decide(snap, rule, limit)
    # placed + running nodes (a yielding gang still runs this cycle) never exceed a pool's capacity
    held: dict[str, int] = defaultdict(int)
    for r in snap.running:
        held[r.pool_id] += r.nodes
    for p in d.place:
        held[p.pool_id] += p.nodes
    for pool in snap.pools:
        assert pool.capacity_nodes is None or held[pool.id] <= pool.capacity_nodes
    placed = [p.job_id for p in d.place]
    assert len(placed) == len(set(placed)) and not set(placed) & set(d.unplaced)
    stopped = [p.job_id for p in d.preempt]
    assert len(stopped) <= rule["max_per_cycle"]
    running = {r.id: r for r in snap.running}
    for job_id in stopped:
        gang = running[job_id]
        left = gang.spec.expected_hours - (snap.now - gang.started_at) / HOUR
        assert gang.spec.checkpoint_dir and gang.nodes >= rule["min_nodes"]
        assert gang.nodes * gang.spec.expected_hours > limit and left >= rule["min_hours_left"]
    # nothing changes unless a gang yields
    plain = decide(snap, burst_limit_node_hours=limit)
    if not stopped and not any("yield" in why for why in d.unplaced.values()):
        assert (d.place, d.preempt, d.unplaced) == (plain.place, plain.preempt, plain.unplaced)
    # without the burst limit the option does nothing
    off, on = decide(snap), decide(snap, burst_yield=rule)
    assert (off.place, off.preempt, off.unplaced) == (on.place, on.preempt, on.unplaced)
