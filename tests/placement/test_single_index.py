"""PoolIndex: grouping by accelerator, and the layout cache never serving stale pool state."""

from __future__ import annotations

from overcast.placement.index import PoolIndex
from overcast.placement.pool import Health
from overcast.placement.single import place_job
from overcast.scheduler.snapshot import Quota
from tests.scheduler.builders import make_job, make_pool


def test_groups_are_contiguous_and_case_insensitive() -> None:
    pools = [make_pool("aws", accelerator="H100"), make_pool("gcp", accelerator="A100"), make_pool("oci")]
    index = PoolIndex.build(pools)
    start, stop = index.positions("h100")
    assert {index.pools[i].provider for i in range(start, stop)} == {"aws", "oci"}
    assert index.positions("B200") == (0, 0)


def test_rebuilding_with_the_same_pools_sees_their_new_state() -> None:
    pools = [make_pool("aws", capacity=4), make_pool("gcp", price=200.0)]
    job = make_job().gpus("H100", 8).nodes(2).build()
    first = place_job(job, PoolIndex.build(pools), now=0.0)
    assert first.ranked[0].pool.provider == "aws"
    pools[0].health = Health.DOWN
    pools[1].price_per_node_hour = 1.0
    second = place_job(job, PoolIndex.build(pools), now=0.0)
    assert [c.pool.provider for c in second.ranked] == ["gcp"]
    assert second.ranked[0].hourly_cost == 2.0
    assert place_job(job, PoolIndex.build(pools, used_nodes={pools[0].id: 3}), now=0.0).excluded["aws"]


def test_same_ids_with_other_shapes_are_not_confused() -> None:
    a = [make_pool("aws", id="p0", accelerator="H100")]
    b = [make_pool("aws", id="p0", accelerator="A100")]
    assert PoolIndex.build(a).positions("H100") == (0, 1)
    assert PoolIndex.build(b).positions("H100") == (0, 0)


def test_quota_columns_cover_provider_and_region() -> None:
    pools = [
        make_pool("aws", region="r1", used=1),
        make_pool("aws", region="r2"),
        make_pool("gcp", region="r1"),
    ]
    quotas = [
        Quota("aws", None, 100),
        Quota("aws", "r1", 20),
        Quota("aws", "r1", 10),
        Quota("azure", None, 5),
    ]
    index = PoolIndex.build(pools, quotas=quotas)
    by_region = {index.pools[i].provider + "/" + index.pools[i].region: i for i in range(len(index))}
    left = index.quota_gpus_left(list(by_region.values()), None)
    got = dict(zip(by_region, left, strict=True))
    assert got["aws/r1"] == 2.0, "tightest of the repeated (aws, r1) quotas, minus 8 GPUs in use"
    assert got["aws/r2"] == 92.0
    assert got["gcp/r1"] == float("inf")
