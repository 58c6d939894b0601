from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overcast.catalog.fleet import parse_fleet
from overcast.catalog.load import load_offers
from overcast.catalog.pools import (
    DEFAULT_PREEMPTIONS_PER_HOUR,
    FALLBACK_PREEMPTIONS_PER_HOUR,
    build_pools,
    quotas,
)
from overcast.placement.pool import Purchase
from overcast.scheduler.snapshot import Quota
from tests.catalog.builders import make_offer

NOW = dt.datetime(2026, 11, 26, tzinfo=dt.UTC).timestamp()


def test_on_demand_and_spot_pools() -> None:
    offers = [
        make_offer("aws", zone="use1-az1", instance_type="p5.48xlarge", price=55.0, spot=20.0),
        make_offer("lambda", region="us-west-1", instance_type="gpu_8x_h100", price=24.0),
        make_offer("vast", region="EU", instance_type="v", price=None, spot=9.0),
    ]
    pools = {p.id: p for p in build_pools(offers, now=NOW)}
    assert set(pools) == {
        "aws/us-east-1/use1-az1/p5.48xlarge/on-demand",
        "aws/us-east-1/use1-az1/p5.48xlarge/spot",
        "lambda/us-west-1/-/gpu_8x_h100/on-demand",
        "vast/EU/-/v/spot",
    }
    spot = pools["aws/us-east-1/use1-az1/p5.48xlarge/spot"]
    assert (spot.purchase, spot.price_per_node_hour, spot.capacity_nodes) == (Purchase.SPOT, 20.0, None)
    assert spot.preemptions_per_hour == DEFAULT_PREEMPTIONS_PER_HOUR["aws"]
    assert pools["vast/EU/-/v/spot"].preemptions_per_hour == FALLBACK_PREEMPTIONS_PER_HOUR
    on_demand = pools["aws/us-east-1/use1-az1/p5.48xlarge/on-demand"]
    assert (on_demand.gpus_per_node, on_demand.accelerator, on_demand.preemptions_per_hour) == (
        8,
        "H100",
        0.0,
    )


def test_fractional_gpus_are_not_pooled() -> None:
    assert (
        build_pools([make_offer("aws", "L4", 0.25, price=0.7), make_offer("aws", "L4", 1.5)], now=NOW) == []
    )


def test_reservations_disabled_providers_and_clusters() -> None:
    fleet = parse_fleet("""
reservations:
  - {provider: oci, region: us-ashburn-1, accelerator: H100, gpus: 512, price_per_gpu_hour: 2.1,
     until: 2027-06-30}
  - {provider: oci, region: us-ashburn-1, accelerator: H100, gpus: 64, price_per_gpu_hour: 2.5,
     until: 2026-01-31}
  - {provider: gcp, region: us-central1, accelerator: H100, gpus: 8, price_per_gpu_hour: 1, until: 2030-01-01}
  - {provider: aws, region: x, instance_type: cb.8, gpus_per_node: 8, accelerator: H100, gpus: 16,
     price_per_gpu_hour: 3, since: 2027-01-01, until: 2027-12-31}
clusters:
  - {name: oci-hpc, slurm: {conf: /etc/slurm.conf, partition: gpu}, nodes: 4, gpus_per_node: 8,
     accelerator: H100, price_per_gpu_hour: 1.5}
  - {name: azure-local, local: {}, nodes: 2, gpus_per_node: 1, accelerator: A100, price_per_gpu_hour: 2}
disabled_providers: [gcp]
spot_preemptions_per_hour: {oci: 0.3}
""")
    offers = [
        make_offer(
            "oci", region="us-ashburn-1", zone="AD-1", instance_type="BM.GPU.H100.8", price=80, spot=40
        ),
        make_offer("oci", "H100", 1, region="us-ashburn-1", zone="AD-1", instance_type="VM.1", price=10),
        make_offer("gcp", region="us-central1", instance_type="a3-highgpu-8g", price=43),
    ]
    pools = {p.id: p for p in build_pools(offers, fleet, now=NOW)}
    assert not [p for p in pools.values() if p.provider == "gcp"]  # disabled: public and reserved
    reserved = pools["oci/us-ashburn-1/-/BM.GPU.H100.8/reserved"]  # the 8-GPU shape, not the 1-GPU one
    assert (reserved.capacity_nodes, reserved.gpus_per_node) == (64, 8)
    assert reserved.price_per_node_hour == 2.1 * 8 and reserved.marginal_price_per_node_hour == 0.0
    assert reserved.labels["until"] == "2027-06-30"
    # the reservation that ended in January is gone; the one that starts in 2027 is not there yet
    assert sum(p.purchase is Purchase.RESERVED and p.backend == "catalog" for p in pools.values()) == 1
    later = {
        p.id: p for p in build_pools(offers, fleet, now=dt.datetime(2027, 3, 1, tzinfo=dt.UTC).timestamp())
    }
    assert later["aws/x/-/cb.8/reserved"].capacity_nodes == 2
    assert pools["oci/us-ashburn-1/AD-1/BM.GPU.H100.8/spot"].preemptions_per_hour == 0.3
    slurm, local = pools["slurm/oci-hpc"], pools["local/azure-local"]
    assert (slurm.backend, slurm.capacity_nodes, slurm.price_per_node_hour) == ("slurm:oci-hpc", 4, 12.0)
    assert slurm.labels["partition"] == "gpu" and slurm.purchase is Purchase.RESERVED
    assert (local.backend, local.region, local.accelerator, local.gpus_per_node) == (
        "local:azure-local", "local", "A100", 1,
    )  # fmt: skip


def test_quotas() -> None:
    fleet = parse_fleet(
        "quotas: [{provider: aws, region: us-east-1, max_gpus: 256}, {provider: azure, max_gpus: 8}]"
    )
    assert quotas(fleet) == [Quota("aws", "us-east-1", 256), Quota("azure", None, 8)]


def test_whole_catalog_pool_ids_are_unique() -> None:
    pools = build_pools(load_offers(), now=NOW)
    assert len(pools) > 5000
    assert len({p.id for p in pools}) == len(pools)
    assert all(p.gpus_per_node >= 1 and p.price_per_node_hour > 0 for p in pools)


@st.composite
def _offers(draw: st.DrawFn) -> list:
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(["aws", "gcp", "oci", "vast"]), st.sampled_from(["r1", "r2"]),
                      st.sampled_from([None, "z1"]), st.sampled_from(["a", "b", "c"])),
            unique=True, max_size=12,
        )
    )  # fmt: skip
    price = st.none() | st.floats(0.01, 100)
    return [
        make_offer(p, "H100", draw(st.sampled_from([0.25, 0.5, 1, 2, 8])), region=r, zone=z, instance_type=i,
                   price=draw(price), spot=draw(price))
        for p, r, z, i in keys
    ]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(offers=_offers(), disabled=st.lists(st.sampled_from(["aws", "gcp", "oci", "vast"]), max_size=2))
def test_pool_invariants(offers: list, disabled: list[str]) -> None:
    fleet = parse_fleet(f"disabled_providers: {disabled}")
    pools = build_pools(offers, fleet, now=NOW)
    assert len({p.id for p in pools}) == len(pools)
    by_key = {(o.provider, o.region, o.zone, o.instance_type): o for o in offers}
    for p in pools:
        offer = by_key[(p.provider, p.region, p.zone, p.instance_type)]
        assert p.provider not in disabled and p.gpus_per_node == offer.accelerator_count >= 1
        expected = offer.spot_price if p.purchase is Purchase.SPOT else offer.price
        assert p.price_per_node_hour == expected and p.capacity_nodes is None
    wanted = sum(
        (o.price is not None) + (o.spot_price is not None)
        for o in offers
        if o.provider not in disabled and o.accelerator_count >= 1
    )
    assert len(pools) == wanted


def test_a_reservation_must_fill_whole_nodes() -> None:
    # 12 GPUs of 8-GPU machines used to become one node (4 GPUs lost); 4 GPUs became a pool of 0 nodes
    offers = [make_offer("oci", region="r", instance_type="BM.8"), make_offer("oci", "H100", 1, region="r")]
    for gpus in (4, 12):
        text = f"reservations: [{{provider: oci, region: r, accelerator: H100, gpus: {gpus}, "
        fleet = parse_fleet(text + "price_per_gpu_hour: 2, until: 2030-01-01}]")
        with pytest.raises(ValueError, match=f"{gpus} H100 in oci r: not a whole number of BM.8 nodes"):
            build_pools(offers, fleet, now=NOW)
    fleet = parse_fleet(f"{text}gpus_per_node: 1, price_per_gpu_hour: 2, until: 2030-01-01}}]")
    (pool,) = [p for p in build_pools(offers, fleet, now=NOW) if p.purchase is Purchase.RESERVED]
    assert (pool.capacity_nodes, pool.gpus_per_node) == (12, 1)


def test_provider_names_in_the_fleet_file_are_spelled_as_in_the_catalog() -> None:
    # compared as written, "AWS" disabled nothing and an "Oracle" quota limited nothing
    fleet = parse_fleet("""
disabled_providers: [AWS, My-Lab]
quotas: [{provider: Oracle, max_gpus: 8}]
spot_preemptions_per_hour: {GCP: 0.3}
clusters: [{name: My-Lab, local: {}, nodes: 1, gpus_per_node: 1, accelerator: T4}]
""")
    offers = [make_offer("aws", price=1), make_offer("gcp", region="g", price=1, spot=0.5)]
    pools = build_pools(offers, fleet, now=NOW)
    assert [(p.provider, p.purchase, p.preemptions_per_hour) for p in pools] == [
        ("gcp", Purchase.ON_DEMAND, 0.0),
        ("gcp", Purchase.SPOT, 0.3),
    ]
    assert quotas(fleet) == [Quota("oci", None, 8)]
