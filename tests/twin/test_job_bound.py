"""The per-job mean-JCT bound: hand-made cases with known answers, and below real runs of a scenario."""

import numpy as np
import pytest

from overcast.placement.pool import Pool, Purchase
from overcast.twin.job_bound import BoundJob, per_job_jct_lower_bound, scenario_jct_bounds
from overcast.twin.runner import build_world, run_scenario
from tests.twin.helpers import small_scenario


def _pool(name: str, purchase: Purchase, price: float, nodes: int = 1) -> Pool:
    return Pool(
        id=name, provider=name, region="r", zone=None, instance_type="x", accelerator="H100",
        gpus_per_node=1, purchase=purchase, price_per_node_hour=price, capacity_nodes=nodes,
    )  # fmt: skip


def _bound(jobs: list[BoundJob], pools: list[Pool], mean_jct_h: float, slots: int = 3) -> float | None:
    edges = np.arange(0.0, slots + 1.0)
    usable = {p.id: np.full(slots, float(p.capacity_nodes)) for p in pools}
    found = per_job_jct_lower_bound(jobs, pools, usable, edges, 0.0, mean_jct_h)
    return None if found is None else found.cost


def test_two_jobs_at_once_pay_for_one_of_them_and_one_after_the_other_pay_nothing():
    # a free one-node pool and a $8/node-h one; two one-node one-hour jobs at time 0
    pools = [_pool("free", Purchase.RESERVED, 1.0), _pool("paid", Purchase.ON_DEMAND, 8.0)]
    jobs = [BoundJob(0.0, 1, 1.0, False), BoundJob(0.0, 1, 1.0, False)]
    # both end at 1 h only if one runs on the paid pool ($8); the relaxation sees that paying is unavoidable
    # but, counting completions by mean busy time, charges only part of it
    assert 0.0 < _bound(jobs, pools, 1.0) <= 8.0 + 1e-6
    assert _bound(jobs, pools, 1.5) == pytest.approx(0.0)  # ends at 1 h and 2 h: the free pool alone
    assert 0.0 <= _bound(jobs, pools, 1.25) <= 4.0 + 1e-6  # half an hour on the paid pool does it
    assert _bound(jobs, pools, 0.9) is None  # no schedule finishes a one-hour job in less than an hour


def test_a_job_runs_no_wider_than_its_gang():
    # two free nodes do not finish a one-node two-hour job in one hour (a fluid bound would let them)
    pools = [_pool("free", Purchase.RESERVED, 1.0, nodes=2)]
    job = [BoundJob(0.0, 1, 2.0, False)]
    assert _bound(job, pools, 1.0) is None
    assert _bound(job, pools, 2.0) == pytest.approx(0.0)


def test_a_gang_only_uses_pools_it_fits_and_spot_only_when_allowed():
    pools = [
        _pool("free-small", Purchase.RESERVED, 1.0, nodes=1),
        _pool("spot", Purchase.SPOT, 2.0, nodes=4),
        _pool("paid", Purchase.ON_DEMAND, 8.0, nodes=4),
    ]
    gang = [BoundJob(0.0, 2, 1.0, False)]  # does not fit the free pool, may not use spot
    assert _bound(gang, pools, 1.0) == pytest.approx(16.0)
    spot_ok = [BoundJob(0.0, 2, 1.0, True)]
    assert _bound(spot_ok, pools, 1.0) == pytest.approx(4.0)


@pytest.fixture(scope="module")
def scenario():
    return small_scenario(jobs=40)


def test_no_run_of_the_scenario_beats_the_bound_at_its_own_mean_jct(scenario):
    world = build_world(scenario, scenario.seed)
    for run in run_scenario(scenario, ["overcast", "single-provider"]):
        m = run.metrics
        mean_jct = m["jct_hours"]["mean"]
        [bound] = scenario_jct_bounds(scenario, world, scenario.seed, [mean_jct], slot_hours=2.0)
        assert bound is not None, run.policy
        assert m["cost_reserved_fee"] - 0.01 <= bound.cost <= m["cost_total"] + 0.01, run.policy  # 2 decimals


def test_cli_prints_the_bound_per_mean_jct_and_says_when_none_reaches_it(tmp_path):
    from typer.testing import CliRunner

    from overcast.cli.main import app
    from tests.twin.helpers import EXAMPLES

    runner = CliRunner()
    got = runner.invoke(
        app,
        ["twin", "bound", str(EXAMPLES / "small.yaml"), "--jct", "30", "--jct", "0.1", "--slot-hours", "4"],
    )
    assert got.exit_code == 0, got.output
    spec = small_scenario()
    fee = sum(
        p.price_per_node_hour * p.capacity_nodes * (spec.duration_days + spec.drain_days) * 24
        for p, _ in build_world(spec, spec.seed).pools
        if p.purchase is Purchase.RESERVED
    )
    assert f"{fee:,.0f}" in got.output  # at 30 h the reservation alone does it: the fee
    assert "no schedule reaches it" in got.output  # 0.1 h is shorter than most jobs' runtimes
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nduration_days: -1\n")
    got = runner.invoke(app, ["twin", "bound", str(bad), "--jct", "5"])
    assert got.exit_code == 2 and "bad.yaml" in got.output
