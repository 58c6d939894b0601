"""Each hard filter of single-job placement, and the per-provider explanation it leaves behind."""

from __future__ import annotations

import pytest

from overcast.placement.index import PoolIndex
from overcast.placement.pool import Health, Purchase
from overcast.placement.single import place_job
from overcast.scheduler.snapshot import Quota
from overcast.spec.models import SpotPolicy
from tests.scheduler.builders import make_job, make_pool

NOW = 1000.0


def ids(result) -> list[str]:
    return [c.pool.id for c in result.ranked]


def test_accelerator_and_count_per_node() -> None:
    pools = [make_pool("aws", gpus=8), make_pool("aws", gpus=4), make_pool("gcp", accelerator="A100")]
    result = place_job(make_job().gpus("H100", 64).build(), PoolIndex.build(pools), now=NOW)
    assert result.ranked == []
    assert result.excluded == {
        "aws": "2 pools offer H100 but none with 64 per node",
        "gcp": "no pool offers H100",
    }
    ok = place_job(make_job().gpus("h100", 4).build(), PoolIndex.build(pools), now=NOW)
    assert [c.pool.gpus_per_node for c in ok.ranked] == [4], "names match case-insensitively, counts exactly"


def test_any_of_alternatives_pick_the_cheapest() -> None:
    pools = [make_pool("aws", price=100), make_pool("gcp", accelerator="H200", price=90)]
    job = make_job().gpus("H100", 8).gpus("H200", 8).build()
    result = place_job(job, PoolIndex.build(pools), now=NOW)
    assert [c.pool.provider for c in result.ranked] == ["gcp", "aws"]
    assert str(result.ranked[0].accelerator) == "H200:8"


def test_ordered_alternatives_prefer_the_first_feasible() -> None:
    pools = [make_pool("aws", price=100), make_pool("gcp", accelerator="H200", price=90)]
    job = make_job().gpus("H100", 8).gpus("H200", 8).with_(ordered=True).build()
    result = place_job(job, PoolIndex.build(pools), now=NOW)
    assert [c.pool.provider for c in result.ranked] == ["aws", "gcp"]
    assert "preference #1" in result.ranked[0].reason


@pytest.mark.parametrize(
    ("resources", "provider", "why"),
    [
        ({"providers": ("gcp",)}, "aws", "not in resources.providers (gcp)"),
        ({"deny_providers": ("aws",)}, "aws", "denied by resources.deny_providers"),
        (
            {"regions": ("eu-west-1",)},
            "aws",
            "1 pool offers H100:8 but none in resources.regions (eu-west-1)",
        ),
        (
            {"deny_regions": ("us-east-1",)},
            "aws",
            "1 pool offers H100:8 but none outside resources.deny_regions",
        ),
        ({"zones": ("z9",)}, "aws", "1 pool offers H100:8 but none in resources.zones (z9)"),
        ({"instance_type": "p5"}, "aws", "1 pool offers H100:8 but none of instance type p5"),
        ({"cpus": 256}, "aws", "1 pool offers H100:8 but none with 256+ vCPUs per node"),
        ({"memory_gib": 4096}, "aws", "1 pool offers H100:8 but none with 4096+ GiB memory per node"),
    ],
)
def test_location_and_shape_filters_explain_per_provider(resources, provider, why) -> None:
    pools = [
        make_pool("aws", zone="z1", instance_type="p4", vcpus_per_node=192, memory_gib_per_node=2048),
        make_pool("gcp", region="us-central1"),
    ]
    result = place_job(make_job().gpus("H100", 8).with_(**resources).build(), PoolIndex.build(pools), now=NOW)
    assert provider not in {c.pool.provider for c in result.ranked}
    assert result.excluded[provider] == why


def test_unknown_cpu_and_memory_do_not_exclude() -> None:
    pools = [make_pool("aws")]  # catalog rows without vCPU / memory figures
    result = place_job(
        make_job().gpus("H100", 8).with_(cpus=8, memory_gib=64).build(), PoolIndex.build(pools), now=NOW
    )
    assert len(result.ranked) == 1


def test_spot_policy() -> None:
    pools = [make_pool("aws", purchase=Purchase.SPOT, price=30), make_pool("gcp", price=100)]
    index = PoolIndex.build(pools)
    never = place_job(make_job().gpus("H100", 8).spot(SpotPolicy.NEVER).build(), index, now=NOW)
    assert [c.pool.provider for c in never.ranked] == ["gcp"]
    assert never.excluded["aws"] == "1 pool offers H100:8 but none reserved or on-demand (spot: never)"
    required = place_job(make_job().gpus("H100", 8).spot(SpotPolicy.REQUIRED).build(), index, now=NOW)
    assert [c.pool.provider for c in required.ranked] == ["aws"]
    assert required.excluded["gcp"] == "1 pool offers H100:8 but none offered as spot (spot: required)"
    allowed = place_job(make_job().gpus("H100", 8).spot(SpotPolicy.ALLOWED).build(), index, now=NOW)
    assert len(allowed.ranked) == 2


def test_max_price_is_for_the_whole_job_and_reserved_is_free() -> None:
    pools = [make_pool("aws", price=10), make_pool("oci", purchase=Purchase.RESERVED, price=50, capacity=8)]
    job = make_job().gpus("H100", 8).nodes(4).with_(max_price_per_hour=35).build()
    result = place_job(job, PoolIndex.build(pools), now=NOW)
    assert [c.pool.provider for c in result.ranked] == ["oci"]
    assert result.excluded["aws"] == (
        "1 pool offers H100:8 but none within max_price_per_hour $35.00 for 4 node(s) (cheapest $40.00/h)"
    )


def test_health_now() -> None:
    pools = [
        make_pool("aws", health=Health.DOWN),
        make_pool("gcp", health=Health.OUT_OF_CAPACITY, unhealthy_until=NOW + 60),
        make_pool("oci", health=Health.OUT_OF_CAPACITY, unhealthy_until=NOW - 1),  # cool-down over
    ]
    result = place_job(make_job().gpus("H100", 8).build(), PoolIndex.build(pools), now=NOW)
    assert [c.pool.provider for c in result.ranked] == ["oci"]
    assert result.excluded["aws"] == "1 pool offers H100:8 but none healthy now (0 out of capacity, 1 down)"
    assert result.excluded["gcp"] == "1 pool offers H100:8 but none healthy now (1 out of capacity, 0 down)"


def test_whole_gang_fits_in_one_pool() -> None:
    pools = [make_pool("oci", region="a", capacity=3), make_pool("oci", region="b", capacity=4, used=2)]
    result = place_job(make_job().gpus("H100", 8).nodes(4).build(), PoolIndex.build(pools), now=NOW)
    assert result.ranked == [], "3 + 2 free nodes in two pools must not take a 4-node gang"
    assert (
        result.excluded["oci"]
        == "2 pools offer H100:8 but none with 4 free node(s) in one pool (most free: 3)"
    )


def test_usage_overlay_counts_earlier_placements() -> None:
    index = PoolIndex.build([make_pool("oci", capacity=4)])
    usage = index.new_usage()
    usage.take(index, 0, 3)
    job = make_job().gpus("H100", 8).nodes(2).build()
    assert place_job(job, index, now=NOW, usage=usage).ranked == []
    assert len(place_job(job, index, now=NOW).ranked) == 1


def test_quotas_per_provider_and_region() -> None:
    pools = [make_pool("aws", region="us-east-1"), make_pool("aws", region="us-west-2"), make_pool("gcp")]
    quotas = [Quota("aws", "us-east-1", 8), Quota("gcp", None, 16)]
    index = PoolIndex.build(pools, quotas=quotas)
    result = place_job(make_job().gpus("H100", 8).nodes(2).build(), index, now=NOW)
    assert sorted(ids(result)) == sorted([pools[1].id, pools[2].id])
    assert "aws" not in result.excluded, "aws us-west-2 still fits"
    three = place_job(make_job().gpus("H100", 8).nodes(3).build(), index, now=NOW)
    assert [c.pool.region for c in three.ranked] == ["us-west-2"]
    assert three.excluded["gcp"] == (
        "1 pool offers H100:8 but none within its provider/region GPU quota (needs 24 GPUs, at most 16 left)"
    )


def test_quota_counts_gpus_already_in_use() -> None:
    pools = [make_pool("aws", capacity=10, used=3)]
    index = PoolIndex.build(pools, quotas=[Quota("aws", None, 32)])  # 24 of 32 GPUs in use
    assert place_job(make_job().gpus("H100", 8).nodes(2).build(), index, now=NOW).ranked == []
    assert len(place_job(make_job().gpus("H100", 8).build(), index, now=NOW).ranked) == 1


def test_disabled_provider() -> None:
    index = PoolIndex.build([make_pool("aws"), make_pool("gcp")], disabled_providers={"aws"})
    result = place_job(make_job().gpus("H100", 8).build(), index, now=NOW)
    assert [c.pool.provider for c in result.ranked] == ["gcp"]
    assert result.excluded == {"aws": "provider disabled"}


def test_avoid_pools_is_soft() -> None:
    pools = [make_pool("aws", price=10), make_pool("gcp", price=20)]
    index = PoolIndex.build(pools)
    job = make_job().gpus("H100", 8).build()
    result = place_job(job, index, now=NOW, avoid=frozenset({pools[0].id}))
    assert ids(result) == [pools[1].id]
    assert result.excluded["aws"] == "1 fitting pool(s), all in the job's avoid_pools (they just failed it)"
    only = place_job(job, index, now=NOW, avoid=frozenset({pools[0].id, pools[1].id}))
    assert ids(only) == [pools[0].id, pools[1].id], "when every pool was avoided, use them anyway"


def test_cpu_only_job_uses_cpu_pools() -> None:
    pools = [make_pool("aws", accelerator="", gpus=0, price=1), make_pool("aws", price=50)]
    result = place_job(make_job().build(), PoolIndex.build(pools), now=NOW)
    assert [c.pool.accelerator for c in result.ranked] == [""]
