"""Invariants of decide() over random small worlds (Hypothesis).

The oracle here is written independently of the placement code: a plain predicate says whether a pool
could take a job at all, and the checks only use what Decisions exposes.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overcast.placement.pool import Health, Pool, Purchase
from overcast.scheduler.decide import decide
from overcast.scheduler.queue import queue_key, slowdown_key
from overcast.scheduler.snapshot import Quota, Snapshot
from overcast.spec.models import JobSpec, SpotPolicy
from tests.scheduler.builders import make_job, make_pool, make_snapshot

PROVIDERS = ("aws", "gcp", "oci")
REGIONS = ("r1", "r2")
ACCELS = ("H100", "A100")
NOW = 1000.0

# strategies built once: building them per draw costs more than the scheduler itself
PROVIDER = st.sampled_from(PROVIDERS)
REGION = st.sampled_from(REGIONS)
ACCEL = st.sampled_from(ACCELS)
GPUS = st.sampled_from([4, 8])
PURCHASE = st.sampled_from(list(Purchase))
SPOT = st.sampled_from([SpotPolicy.ALLOWED, SpotPolicy.ALLOWED, SpotPolicy.NEVER, SpotPolicy.REQUIRED])
RARELY = st.integers(0, 4).map(lambda i: i == 0)  # constraints are drawn rarely so that jobs compete
HEALTH = st.sampled_from([Health.OK, Health.OK, Health.OK, Health.OUT_OF_CAPACITY, Health.DOWN])
UNTIL = st.sampled_from([None, NOW - 1, NOW + 1])
RATE = st.sampled_from([0.0, 0.2])
TEAM = st.sampled_from(["a", "b"])
PRIORITY = st.integers(-2, 2)
NODES = st.integers(1, 4)
MOVE = "move to cheaper "
ACCEL_LIST = st.lists(ACCEL, min_size=1, max_size=2, unique=True)
PROVIDER_ALLOW = st.lists(PROVIDER, min_size=1, unique=True)
PROVIDER_DENY = st.lists(PROVIDER, max_size=2, unique=True)


@st.composite
def pools(draw) -> list[Pool]:
    out = []
    for i in range(draw(st.integers(1, 7))):
        capacity = None if draw(RARELY) else draw(st.integers(0, 6))
        health = draw(HEALTH)
        out.append(
            make_pool(
                id=f"p{i}",
                provider=draw(PROVIDER),
                region=draw(REGION),
                accelerator=draw(ACCEL),
                gpus=8 if draw(st.booleans()) else draw(GPUS),
                purchase=draw(PURCHASE),
                price=draw(st.floats(1, 100)),
                capacity=capacity,
                used=0 if capacity is None else draw(st.integers(0, capacity + 1)),
                health=health,
                unhealthy_until=draw(UNTIL),
                preemptions_per_hour=draw(RATE),
            )
        )
    return out


def job_builder(draw, name: str):
    b = make_job(name).nodes(draw(NODES)).priority(draw(PRIORITY))
    for accel in draw(ACCEL_LIST):
        b.gpus(accel, 8 if draw(st.booleans()) else draw(GPUS))
    b.spot(draw(SPOT))
    b.team(draw(TEAM))
    if draw(RARELY):
        b.with_(providers=tuple(draw(PROVIDER_ALLOW)))
    if draw(RARELY):
        b.with_(deny_providers=tuple(draw(PROVIDER_DENY)))
    if draw(RARELY):
        b.with_(deny_regions=(draw(REGION),))
    return b


@st.composite
def snapshots(draw, with_quotas: bool = False) -> Snapshot:
    world = draw(pools())
    running = []
    for i in range(draw(st.integers(0, 6))):
        pool = draw(st.sampled_from(world))
        builder = job_builder(draw, f"run{i}")
        if draw(st.booleans()):  # checkpointed, with an estimate: a candidate for consolidation moves
            builder.checkpoint().hours(draw(st.sampled_from([0.5, 2.0, 8.0])))
        running.append(builder.running(pool, started_at=draw(st.floats(0, NOW))))
    pending = []
    for i in range(draw(st.integers(0, 10))):
        avoid = frozenset(draw(st.lists(st.sampled_from([p.id for p in world]), max_size=2)))
        pending.append(
            job_builder(draw, f"job{i}").pending(submitted_at=draw(st.integers(0, 5)), avoid_pools=avoid)
        )
    if draw(st.booleans()) and pending:
        pending.append(pending[0])  # listed twice: must still be placed at most once
    quotas = []
    if with_quotas:
        for provider in draw(st.lists(PROVIDER, max_size=3, unique=True)):
            region = draw(st.sampled_from([None, *REGIONS]))
            quotas.append(Quota(provider, region, draw(st.integers(0, 48))))
    disabled = frozenset(draw(st.lists(PROVIDER, max_size=1)))
    return make_snapshot(world, pending, running, quotas, disabled, now=NOW)


@st.composite
def crowded(draw) -> Snapshot:
    """One or two small H100 pools, running and pending jobs of mixed priorities: about half the
    examples preempt (most of those several victims), some also place lower jobs next to a waiter."""
    world = [make_pool(id=f"p{i}", provider=PROVIDERS[i], capacity=draw(st.integers(1, 8))) for i in range(2)]
    world = world[: draw(st.integers(1, 2))]
    running = [
        make_job(f"run{i}")
        .gpus("H100", 8)
        .nodes(draw(st.integers(1, 3)))
        .priority(draw(st.integers(-2, 0)))
        .running(draw(st.sampled_from(world)), started_at=draw(st.floats(0, NOW)))
        for i in range(draw(st.integers(0, 4)))  # often some room left: lower jobs compete for it
    ]
    pending = [
        make_job(f"job{i}")
        .gpus("H100", 8)
        .nodes(draw(NODES))
        .priority(draw(PRIORITY))
        .pending(submitted_at=i)
        for i in range(draw(st.integers(1, 5)))
    ]
    return make_snapshot(world, pending, running, [], frozenset(), now=NOW)


@st.composite
def movable(draw) -> Snapshot:
    """H100 pools of every purchase kind with some room, checkpointed running jobs with estimates, few
    pending jobs: worlds where consolidation moves happen (most examples move something)."""
    world = [
        make_pool(
            id=f"p{i}",
            provider=draw(PROVIDER),
            purchase=draw(PURCHASE),
            price=draw(st.floats(1, 100)),
            capacity=(capacity := draw(st.integers(1, 8))),
            used=draw(st.integers(0, capacity)),
            preemptions_per_hour=draw(RATE),
        )
        for i in range(draw(st.integers(2, 4)))
    ]
    running = [
        make_job(f"run{i}")
        .gpus("H100", 8)
        .nodes(draw(st.integers(1, 3)))
        .hours(draw(st.sampled_from([0.5, 2.0, 8.0, 32.0])))
        .checkpoint()
        .running(draw(st.sampled_from(world)), started_at=draw(st.floats(-8 * 3600, NOW - 3600)))
        for i in range(draw(st.integers(1, 5)))
    ]
    pending = [
        make_job(f"job{i}").gpus("H100", 8).nodes(draw(NODES)).pending(submitted_at=i)
        for i in range(draw(st.integers(0, 3)))
    ]
    return make_snapshot(world, pending, running, [], frozenset(), now=NOW)


WORLDS = st.one_of(snapshots(), crowded())


def could_take(pool: Pool, spec: JobSpec, snapshot: Snapshot) -> bool:
    """Every hard constraint but capacity and quota, written out plainly."""
    res = spec.resources
    if pool.provider in snapshot.disabled_providers or pool.provider in res.deny_providers:
        return False
    if res.providers and pool.provider not in res.providers:
        return False
    if pool.region in res.deny_regions or (res.regions and pool.region not in res.regions):
        return False
    if not any(a.name == pool.accelerator and a.count == pool.gpus_per_node for a in res.accelerators):
        return False
    if res.spot is SpotPolicy.NEVER and pool.purchase is Purchase.SPOT:
        return False
    if res.spot is SpotPolicy.REQUIRED and pool.purchase is not Purchase.SPOT:
        return False
    return pool.usable(snapshot.now)


def used_at_start(snapshot: Snapshot) -> dict[str, int]:
    held: dict[str, int] = defaultdict(int)
    for r in snapshot.running:
        held[r.pool_id] += r.nodes
    return {p.id: max(p.used_nodes, held[p.id]) for p in snapshot.pools}


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.format(record))


def run(snapshot: Snapshot, batch: bool, **options: float):
    """decide() on ``snapshot``; with ``batch`` every level goes to the batch solver. decide() survives
    a solver failure by placing one by one, so the failure is caught from its log here instead."""
    errors = Errors()
    logger = logging.getLogger("overcast.scheduler.batch_adapter")
    logger.addHandler(errors)
    try:
        decisions = decide(snapshot, batch_threshold=0 if batch else 1000, time_budget_s=0.5, **options)
    finally:
        logger.removeHandler(errors)
    assert not errors.messages, errors.messages[0]
    return decisions


SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(WORLDS, st.booleans())
def test_safety(snapshot: Snapshot, batch: bool) -> None:
    """No job placed twice, gangs whole, no pool over capacity, constraints honoured."""
    d = run(snapshot, batch)
    pools = {p.id: p for p in snapshot.pools}
    specs = {j.id: j.spec for j in snapshot.pending}
    placed_ids = [p.job_id for p in d.place]
    assert len(placed_ids) == len(set(placed_ids)), "a job was placed twice"
    assert not set(placed_ids) & set(d.unplaced), "a job is both placed and unplaced"
    assert set(placed_ids) | set(d.unplaced) == set(specs), "every pending job gets an answer"
    used = used_at_start(snapshot)
    added: dict[str, int] = defaultdict(int)
    for place in d.place:
        spec, pool = specs[place.job_id], pools[place.pool_id]
        assert place.nodes == spec.num_nodes, "gang split or resized"
        assert could_take(pool, spec, snapshot), f"{place.job_id} placed on a pool it excludes"
        added[pool.id] += place.nodes
    for pool_id, nodes in added.items():
        cap = pools[pool_id].capacity_nodes
        assert cap is None or nodes <= max(0, cap - used[pool_id]), f"{pool_id} over capacity"


@SETTINGS
@given(snapshots(with_quotas=True), st.booleans())
def test_quotas_never_exceeded(snapshot: Snapshot, batch: bool) -> None:
    d = run(snapshot, batch)
    pools = {p.id: p for p in snapshot.pools}
    used = used_at_start(snapshot)
    for quota in snapshot.quotas:

        def covered(pool: Pool, q: Quota = quota) -> bool:
            return pool.provider == q.provider and q.region in (None, pool.region)

        before = sum(used[p.id] * p.gpus_per_node for p in snapshot.pools if covered(p))
        new = sum(x.nodes * pools[x.pool_id].gpus_per_node for x in d.place if covered(pools[x.pool_id]))
        assert new == 0 or before + new <= quota.max_gpus, f"quota {quota} exceeded"


@SETTINGS
@given(WORLDS, st.booleans())
def test_priority_never_inverted_and_preemption_complete(snapshot: Snapshot, batch: bool) -> None:
    """A job left waiting could not use the nodes that lower-priority jobs got or keep.

    For an unplaced job J (not waiting on preemptions) and any pool P it could use: P's free nodes at
    the end + nodes placed in P for lower-priority jobs + nodes of lower-priority jobs still running in
    P must stay below J's gang size, else J was skipped in favour of less important work.
    """
    d = run(snapshot, batch)
    specs = {j.id: j.spec for j in snapshot.pending}
    used = used_at_start(snapshot)
    preempted = {p.job_id for p in d.preempt}
    for place in d.place:
        used[place.pool_id] += place.nodes
    # a job waiting for preemptions holds free nodes of its pool; the hold may explain why others lost
    held_for = defaultdict(list)
    for job_id, why in d.unplaced.items():
        if why.startswith("waiting for "):
            held_for[why.removeprefix("waiting for ").split(":", 1)[0]].append(specs[job_id].priority)
    for job_id, why in d.unplaced.items():
        if why.startswith("waiting for"):
            continue
        spec = specs[job_id]
        for pool in snapshot.pools:
            if pool.capacity_nodes is None or not could_take(pool, spec, snapshot):
                continue
            if any(p >= spec.priority for p in held_for[pool.id]):
                continue
            free = pool.capacity_nodes - used[pool.id]  # negative when over capacity
            lower_placed = sum(
                x.nodes for x in d.place if x.pool_id == pool.id and specs[x.job_id].priority < spec.priority
            )
            lower_running = sum(
                r.nodes
                for r in snapshot.running
                if r.pool_id == pool.id and r.spec.priority < spec.priority and r.id not in preempted
            )
            assert free + lower_placed + lower_running < spec.num_nodes, (
                f"{job_id} (priority {spec.priority}) left out of {pool.id}: {free} free, "
                f"{lower_placed} placed and {lower_running} running for lower priorities; {why}"
            )


@SETTINGS
@given(WORLDS, st.booleans())
def test_preemption_only_of_lower_priority(snapshot: Snapshot, batch: bool) -> None:
    d = run(snapshot, batch)
    running = {r.id: r for r in snapshot.running}
    specs = {j.id: j.spec for j in snapshot.pending}
    victims = [p.job_id for p in d.preempt]
    assert len(victims) == len(set(victims)), "a job preempted twice"
    for p in d.preempt:
        if p.reason.startswith(MOVE):
            continue  # test_consolidation_moves_are_safe
        assert p.job_id in running, "preempted a job that is not running"
        for_job = p.for_job
        assert specs[for_job].priority > running[p.job_id].spec.priority
        assert d.unplaced[for_job].startswith("waiting for"), "preemptor must wait for its victims"


@settings(SETTINGS, max_examples=200)  # the waiter's hold is tested only where a lower job could take it
@given(WORLDS, st.booleans())
def test_preemption_frees_enough_and_no_more(snapshot: Snapshot, batch: bool) -> None:
    """Victims run in the pool their preemptor waits for; once they stop, every job waiting for that
    pool fits in it next to what was placed there (the free nodes were held, not given to lower
    priorities; a pool over capacity is brought back under it); and no victim could be spared:
    without any one of them the gang would not fit."""
    d = run(snapshot, batch)
    running = {r.id: r for r in snapshot.running}
    specs = {j.id: j.spec for j in snapshot.pending}
    pools = {p.id: p for p in snapshot.pools}
    victims: dict[str, list[int]] = defaultdict(list)  # preemptor -> victims' nodes
    for p in d.preempt:
        if p.reason.startswith(MOVE):
            continue
        for_job = p.for_job
        pool_id = d.unplaced[for_job].removeprefix("waiting for ").split(":", 1)[0]
        assert running[p.job_id].pool_id == pool_id, f"{p.job_id} does not run where {for_job} waits"
        victims[for_job].append(running[p.job_id].nodes)
    waiting: dict[str, int] = defaultdict(int)  # pool -> nodes its waiting jobs need
    freed: dict[str, int] = defaultdict(int)
    used = used_at_start(snapshot)
    for job_id, nodes in victims.items():
        pool_id = d.unplaced[job_id].removeprefix("waiting for ").split(":", 1)[0]
        cap = pools[pool_id].capacity_nodes
        over = 0 if cap is None else max(0, used[pool_id] - cap)  # to free before any room appears
        assert sum(nodes) - min(nodes) < specs[job_id].num_nodes + over, f"{job_id}: a victim not needed"
        waiting[pool_id] += specs[job_id].num_nodes
        freed[pool_id] += sum(nodes)
    for pool_id, need in waiting.items():
        cap = pools[pool_id].capacity_nodes
        if cap is None:
            continue  # only a quota made it preempt
        placed = sum(x.nodes for x in d.place if x.pool_id == pool_id)
        assert cap - used[pool_id] - placed + freed[pool_id] >= need, f"{pool_id} cannot fit its waiters"


@SETTINGS
@given(snapshots())
def test_avoid_pools_respected_when_another_pool_fits(snapshot: Snapshot) -> None:
    """A job placed on a pool it asked to avoid had no other pool with room at its turn: each other
    pool it could use has fewer free nodes than it needs, even adding back what jobs after it took."""
    d = run(snapshot, batch=False)
    pending = {j.id: j for j in snapshot.pending}
    turn = {
        job.id: i
        for i, job in enumerate(sorted(pending.values(), key=lambda j: slowdown_key(j, snapshot.now)))
    }
    used = used_at_start(snapshot)
    for place in d.place:
        used[place.pool_id] += place.nodes
    for place in d.place:
        job = pending[place.job_id]
        if place.pool_id not in job.avoid_pools:
            continue
        for pool in snapshot.pools:
            if pool.id in job.avoid_pools or not could_take(pool, job.spec, snapshot):
                continue
            assert pool.capacity_nodes is not None, f"{job.id} avoided nothing though {pool.id} is unlimited"
            later = sum(x.nodes for x in d.place if x.pool_id == pool.id and turn[x.job_id] > turn[job.id])
            free = max(0, pool.capacity_nodes - used[pool.id]) + later
            assert free < job.spec.num_nodes, (
                f"{job.id} placed on avoided {place.pool_id}; {pool.id} had room"
            )


def test_queue_order_is_priority_then_submit_time() -> None:
    jobs = [
        make_job("late-high").gpus("H100", 8).priority(5).pending(submitted_at=9),
        make_job("early-low").gpus("H100", 8).priority(0).pending(submitted_at=1),
        make_job("early-high").gpus("H100", 8).priority(5).pending(submitted_at=2),
    ]
    assert [j.id for j in sorted(jobs, key=queue_key)] == ["early-high", "late-high", "early-low"]


@SETTINGS
@given(st.one_of(WORLDS, movable()), st.booleans())
def test_consolidation_moves_are_safe(snapshot: Snapshot, batch: bool) -> None:
    """A move stops a running, checkpointed job with at least an hour of expected work left, only in a
    cycle that left no job waiting, towards a usable pool it may run on that is cheaper than where it
    runs (or reclaims less often) and has room for it next to everything placed and moved there."""
    d = run(snapshot, batch)
    running = {r.id: r for r in snapshot.running}
    pools = {p.id: p for p in snapshot.pools}
    used = used_at_start(snapshot)
    for place in d.place:
        used[place.pool_id] += place.nodes
    for p in d.preempt:
        if not p.reason.startswith(MOVE):
            continue
        assert not d.unplaced, f"moved {p.job_id} while {sorted(d.unplaced)} wait"
        job = running[p.job_id]
        target = pools[p.reason.removeprefix(MOVE).split(":", 1)[0]]
        assert job.spec.checkpoint_dir and job.spec.expected_hours - (NOW - job.started_at) / 3600 >= 1.0
        assert could_take(target, job.spec, snapshot) and target.usable(NOW)
        here = pools[job.pool_id]
        assert target.marginal_price_per_node_hour < here.marginal_price_per_node_hour or (
            target.preemptions_per_hour < here.preemptions_per_hour
        ), f"{p.job_id} moved to {target.id}, neither cheaper nor safer than {here.id}"
        used[target.id] += job.nodes
        cap = target.capacity_nodes
        assert cap is None or used[target.id] <= cap, f"{target.id} over capacity after moves"


@settings(SETTINGS, max_examples=300)  # about 1 in 40 of these worlds could break the rule
@given(movable(), st.booleans())
def test_burst_limit_keeps_big_jobs_off_list_price_while_a_reservation_fits_them(
    snapshot: Snapshot, batch: bool
) -> None:
    """With a limit of 1 node-hour, a job of 2+ node-hours lands only on zero-price pools whenever some
    usable zero-price pool it may use is large enough for its gang."""
    d = run(snapshot, batch, burst_limit_node_hours=1.0)
    specs = {j.id: j.spec for j in snapshot.pending}
    pools = {p.id: p for p in snapshot.pools}
    for place in d.place:
        spec, pool = specs[place.job_id], pools[place.pool_id]
        if spec.num_nodes * spec.expected_hours <= 1.0 or pool.marginal_price_per_node_hour == 0:
            continue
        homes = [
            p.id
            for p in snapshot.pools
            if p.marginal_price_per_node_hour == 0
            and could_take(p, spec, snapshot)
            and (p.capacity_nodes is None or p.capacity_nodes >= spec.num_nodes)
        ]
        assert not homes, f"{place.job_id} burst onto {pool.id} though {homes} could hold it"
