"""Team budgets in decide(): hand-made worlds on both placement paths, and properties over the
scheduler property tests' random worlds (no overspending; budgets that cannot bind change nothing)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overcast.placement.pool import Pool, Purchase
from overcast.placement.score import lost_hours_per_preemption
from overcast.scheduler.budget import dollars
from overcast.scheduler.decide import decide
from overcast.scheduler.snapshot import Decisions, Snapshot
from overcast.spec.models import JobSpec, SpotPolicy
from tests.scheduler.builders import make_job, make_pool, make_snapshot
from tests.scheduler.test_decide_properties import SETTINGS, WORLDS, movable, run

BATCH = pytest.mark.parametrize("batch", [False, True], ids=["sequential", "batch"])


def _decide(snapshot: Snapshot, batch: bool) -> Decisions:
    return decide(snapshot, batch_threshold=0 if batch else 1000, time_budget_s=0.5)


@BATCH
def test_a_team_over_budget_only_gets_the_reservation(batch: bool) -> None:
    reserved = make_pool("oci", purchase=Purchase.RESERVED, price=80, capacity=1)
    public = make_pool("aws", price=100, capacity=10)
    pending = [make_job(f"ml{i}").gpus("H100", 8).team("ml").pending(submitted_at=i) for i in range(3)] + [
        make_job("vis").gpus("H100", 8).team("vision").pending(submitted_at=9)
    ]
    snapshot = make_snapshot([reserved, public], pending)
    snapshot.team_budgets = {"ml": -50.0}  # spent $50 more than its budget already
    d = _decide(snapshot, batch)
    placed = {p.job_id: p.pool_id for p in d.place}
    assert placed == {"ml0": reserved.id, "vis": public.id}  # vision has no budget: unlimited
    for job in ("ml1", "ml2"):
        assert d.unplaced[job] == "team ml budget: -$50.00 left this month, job would cost ~$100"


@BATCH
def test_one_cycle_cannot_overspend_and_spot_fits_where_on_demand_does_not(batch: bool) -> None:
    public = make_pool("aws", price=100, capacity=10)  # $100 per job-hour
    spot = make_pool("gcp", purchase=Purchase.SPOT, price=30, capacity=1)  # $30 (no preemption rate)
    job = make_job().gpus("H100", 8).team("ml").spot(SpotPolicy.ALLOWED)
    pending = [job.pending(f"ml{i}", submitted_at=i) for i in range(4)]
    snapshot = make_snapshot([public, spot], pending)
    snapshot.team_budgets = {"ml": 250.0}
    d = _decide(snapshot, batch)
    pools = sorted(p.pool_id for p in d.place)
    assert pools == sorted([spot.id, public.id, public.id])  # 30 + 100 + 100 <= 250; a third $100 is not
    [(job, why)] = d.unplaced.items()
    assert why == "team ml budget: $20.00 left this month, job would cost ~$100"


def test_running_jobs_expected_cost_counts_against_what_is_left() -> None:
    public = make_pool("aws", price=100, capacity=10)
    # 4 h expected, 1 h in: $300 still to come, so of $500 only $200 can be committed now
    running = [make_job("r").gpus("H100", 8).team("ml").hours(4).running(public, started_at=0.0)]
    pending = [make_job("new").gpus("H100", 8).team("ml").hours(3).pending()]
    snapshot = make_snapshot([public], pending, running, now=3600.0)
    snapshot.team_budgets = {"ml": 500.0}
    assert decide(snapshot).unplaced == {"new": "team ml budget: $200 left this month, job would cost ~$300"}
    snapshot.team_budgets = {"ml": 600.0}
    assert [p.job_id for p in decide(snapshot).place] == ["new"]


def test_a_preferred_list_price_pool_gives_way_to_a_reservation_lower_in_rank() -> None:
    h100 = make_pool("aws", price=100, capacity=4)
    a100 = make_pool("oci", accelerator="A100", purchase=Purchase.RESERVED, price=40, capacity=4)
    job = make_job("j").gpus("H100", 8).gpus("A100", 8).team("ml").with_(ordered=True).pending()
    snapshot = make_snapshot([h100, a100], [job])
    assert [p.pool_id for p in decide(snapshot).place] == [h100.id]  # preference #1 wins on price
    snapshot.team_budgets = {"ml": 10.0}
    [place] = decide(snapshot).place
    assert place.pool_id == a100.id
    assert place.reason.endswith("#1 not: team ml budget: $10.00 left this month, job would cost ~$100")


def test_a_job_over_budget_preempts_only_on_zero_price_pools() -> None:
    reserved = make_pool("oci", purchase=Purchase.RESERVED, price=80, capacity=1)
    public = make_pool("aws", price=100, capacity=1)
    low = make_job("low").gpus("H100", 8).team("vision").priority(-1)
    running = [low.running(public, job_id="low-public"), low.running(reserved, job_id="low-reserved")]
    urgent = make_job("urgent").gpus("H100", 8).team("ml").priority(5).pending()
    snapshot = make_snapshot([reserved, public], [urgent], running)
    snapshot.team_budgets = {"ml": 0.0}
    d = decide(snapshot)
    assert [p.job_id for p in d.preempt] == ["low-reserved"]
    assert d.unplaced["urgent"].startswith(f"waiting for {reserved.id}")
    snapshot.running = running[:1]  # the reservation is empty now: no one is stopped, it starts there
    d = decide(snapshot)
    assert (d.preempt, [p.pool_id for p in d.place]) == ([], [reserved.id])


def test_dollars_reads_as_money() -> None:
    assert [dollars(x) for x in (49_999.6, 12.345, 0.0, -0.001, -250.0)] == [
        "$50,000", "$12.35", "$0.00", "$0.00", "-$250",
    ]  # fmt: skip


# -- properties over the scheduler property tests' worlds ---------------------------------------

BUDGET = st.sampled_from([-10.0, 0.0, 50.0, 100.0, 200.0, 400.0, 1000.0, 1e5])
BUDGETS = st.fixed_dictionaries({"a": BUDGET}, optional={"b": BUDGET})  # b: sometimes unlimited
TEAM = st.sampled_from(["a", "b"])


@st.composite
def spenders(draw) -> Snapshot:
    """Roomy H100 pools of every purchase kind, two teams' running and pending jobs of a few node-hours
    each: worlds where most budgets bind (the property tests' worlds rarely make a team spend much)."""
    world = [
        make_pool(
            id=f"p{i}",
            provider=f"c{i}",
            purchase=draw(st.sampled_from(list(Purchase))),
            price=draw(st.floats(1, 100)),
            capacity=draw(st.integers(1, 8)),
            preemptions_per_hour=draw(st.sampled_from([0.0, 0.2])),
        )
        for i in range(draw(st.integers(1, 4)))
    ]
    hours = st.sampled_from([0.5, 1.0, 3.0])

    def job(name: str):  # a builder
        b = make_job(name).gpus("H100", 8).nodes(draw(st.integers(1, 3))).team(draw(TEAM))
        return b.hours(draw(hours)).spot(SpotPolicy.ALLOWED).priority(draw(st.integers(0, 1)))

    running = [
        job(f"run{i}").running(draw(st.sampled_from(world)), started_at=draw(st.floats(-3 * 3600, 0)))
        for i in range(draw(st.integers(0, 3)))
    ]
    pending = [job(f"job{i}").pending(submitted_at=i) for i in range(draw(st.integers(1, 8)))]
    return make_snapshot(world, pending, running, now=0.0)


def _expected_cost(pool: Pool, spec: JobSpec, nodes: int, hours: float) -> float:
    risk = 1.0 + pool.preemptions_per_hour * lost_hours_per_preemption(spec)
    return nodes * pool.marginal_price_per_node_hour * hours * risk


@settings(SETTINGS, max_examples=150)
@given(st.one_of(WORLDS, movable(), spenders(), spenders()), BUDGETS, st.booleans())
def test_no_team_commits_more_than_it_has_left(snapshot: Snapshot, budgets: dict, batch: bool) -> None:
    """Placements on list-price pools plus running jobs' expected remaining cost stay within each
    budgeted team's money left (a team already past it places on zero-price pools only)."""
    snapshot.team_budgets = budgets
    d = run(snapshot, batch)
    pools = {p.id: p for p in snapshot.pools}
    specs = {j.id: j.spec for j in snapshot.pending}
    committed: dict[str, float] = defaultdict(float)
    for r in snapshot.running:
        pool = pools.get(r.pool_id)
        hours_left = max(r.spec.expected_hours - max(snapshot.now - r.started_at, 0.0) / 3600.0, 0.0)
        if pool is not None:
            committed[r.spec.team] += _expected_cost(pool, r.spec, r.nodes, hours_left)
    for place in d.place:
        spec, pool = specs[place.job_id], pools[place.pool_id]
        if spec.team in budgets and pool.marginal_price_per_node_hour > 0:
            committed[spec.team] += _expected_cost(pool, spec, place.nodes, spec.expected_hours)
            assert committed[spec.team] <= budgets[spec.team] + 1e-6, f"{spec.team} overspent"


@SETTINGS
@given(st.one_of(WORLDS, movable(), spenders()), st.booleans())
def test_budgets_that_cannot_bind_change_no_decision(snapshot: Snapshot, batch: bool) -> None:
    """Budgets far above any cost (and one for a team with no jobs) give the same decisions as none."""
    plain = run(snapshot, batch)
    rich = run(replace(snapshot, team_budgets={"a": 1e18, "b": 1e18, "idle": 0.0}), batch)
    for d in (plain, rich):
        d.seconds, d.step_seconds = 0.0, {}
    assert rich == plain
