"""Score and select: expected cost, reserved capacity, the spot discount, ties, top N."""

from __future__ import annotations

import pytest

from overcast.placement import score
from overcast.placement.index import PoolIndex
from overcast.placement.pool import Purchase
from overcast.placement.single import place_job
from overcast.spec.models import SpotPolicy
from tests.scheduler.builders import make_job, make_pool

NOW = 0.0


def test_expected_cost_is_nodes_times_price_times_hours() -> None:
    pools = [make_pool("aws", price=30.0), make_pool("gcp", price=20.0), make_pool("oci", price=25.0)]
    result = place_job(make_job().gpus("H100", 8).nodes(3).hours(10).build(), PoolIndex.build(pools), now=NOW)
    assert [c.pool.provider for c in result.ranked] == ["gcp", "oci", "aws"]
    best = result.ranked[0]
    assert best.hourly_cost == pytest.approx(60.0)
    assert best.expected_cost == pytest.approx(600.0)
    assert result.ranked[1].reason.startswith(
        "H100:8 x3 nodes on-demand in oci/us-east-1; +$150.00 expected vs #1"
    )


def test_reserved_capacity_is_cheapest_even_at_a_higher_list_price() -> None:
    pools = [
        make_pool("aws", price=10.0),
        make_pool("oci", purchase=Purchase.RESERVED, price=80.0, capacity=8),
    ]
    result = place_job(make_job().gpus("H100", 8).build(), PoolIndex.build(pools), now=NOW)
    best = result.ranked[0]
    assert best.pool.provider == "oci"
    assert best.expected_cost == 0.0 and best.hourly_cost == 80.0
    assert best.reason == (
        "cheapest H100:8 reserved in oci/us-east-1; reserved capacity free (list $80.00/h); 8 free"
    )


def test_a_cluster_named_after_itself_is_named_once() -> None:
    cluster = make_pool("oci-hpc", region="oci-hpc", purchase=Purchase.RESERVED, capacity=16)
    best = place_job(make_job().gpus("H100", 8).build(), PoolIndex.build([cluster]), now=NOW).ranked[0]
    assert best.reason.startswith("cheapest H100:8 reserved in oci-hpc; ")


def test_between_reserved_pools_the_lower_list_price_wins() -> None:
    pools = [
        make_pool("aws", purchase=Purchase.RESERVED, price=90.0, capacity=8),
        make_pool("oci", purchase=Purchase.RESERVED, price=80.0, capacity=8),
    ]
    result = place_job(make_job().gpus("H100", 8).build(), PoolIndex.build(pools), now=NOW)
    assert [c.pool.provider for c in result.ranked] == ["oci", "aws"]
    assert "; same expected cost as #1, higher list price; " in result.ranked[1].reason


def test_spot_is_discounted_by_preemption_risk() -> None:
    # spot at $60 with 0.5 preemptions/h; a job with checkpoints loses 0.25 + 0.5 h per preemption
    spot = make_pool("aws", purchase=Purchase.SPOT, price=60.0, preemptions_per_hour=0.5)
    on_demand = make_pool("gcp", price=70.0)
    index = PoolIndex.build([spot, on_demand])
    job = make_job().gpus("H100", 8).spot(SpotPolicy.ALLOWED).hours(4).checkpoint().build()
    lost = score.RESTART_HOURS + score.CHECKPOINT_INTERVAL_HOURS / 2
    result = place_job(job, index, now=NOW)
    by_provider = {c.pool.provider: c for c in result.ranked}
    assert by_provider["aws"].expected_cost == pytest.approx(60 * 4 * (1 + 0.5 * lost))
    assert by_provider["gcp"].expected_cost == pytest.approx(70 * 4)
    assert [c.pool.provider for c in result.ranked] == ["gcp", "aws"], "cheaper list price, dearer after risk"
    assert "+38% for preemption risk (0.5/h)" in by_provider["aws"].reason


def test_spot_without_checkpoints_loses_half_the_run_per_preemption() -> None:
    spot = make_pool("aws", purchase=Purchase.SPOT, price=60.0, preemptions_per_hour=0.1)
    index = PoolIndex.build([spot])
    with_ckpt = make_job().gpus("H100", 8).spot(SpotPolicy.ALLOWED).hours(20).checkpoint().build()
    without = make_job().gpus("H100", 8).spot(SpotPolicy.ALLOWED).hours(20).build()
    cost_with = place_job(with_ckpt, index, now=NOW).ranked[0].expected_cost
    cost_without = place_job(without, index, now=NOW).ranked[0].expected_cost
    assert cost_with == pytest.approx(60 * 20 * (1 + 0.1 * 0.75))
    assert cost_without == pytest.approx(60 * 20 * (1 + 0.1 * (0.25 + 10)))


def test_ties_break_by_list_price_then_pool_id_and_top_limits() -> None:
    pools = [make_pool("gcp", price=20.0), make_pool("aws", price=20.0), make_pool("oci", price=20.0)]
    index = PoolIndex.build(pools)
    result = place_job(make_job().gpus("H100", 8).build(), index, now=NOW, top=2)
    assert [c.pool.provider for c in result.ranked] == ["aws", "gcp"]
    assert "same expected cost and list price as #1" in result.ranked[1].reason
    assert result.feasible == 3


def test_an_earlier_preference_may_cost_more_and_says_so() -> None:
    pools = [make_pool("aws", accelerator="A100", price=30.0), make_pool("gcp", price=20.0)]
    job = make_job().gpus("A100", 8).gpus("H100", 8).with_(ordered=True).build()
    result = place_job(job, PoolIndex.build(pools), now=NOW)
    assert [c.pool.provider for c in result.ranked] == ["aws", "gcp"]
    assert "(preference #2); -$10.00 expected vs #1" in result.ranked[1].reason


def test_explain_ranks_off_keeps_only_the_winner_reason() -> None:
    pools = [make_pool("gcp", price=20.0), make_pool("aws", price=30.0)]
    result = place_job(
        make_job().gpus("H100", 8).build(), PoolIndex.build(pools), now=NOW, explain_ranks=False
    )
    assert result.ranked[0].reason.startswith("cheapest")
    assert result.ranked[1].reason == ""
