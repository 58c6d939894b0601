"""Why-not explanations for unplaceable jobs, over builders and over the real bundled catalog."""

from __future__ import annotations

import functools

from overcast.placement.index import PoolIndex
from overcast.placement.single import place_job
from tests.scheduler.builders import make_job, make_pool


@functools.cache
def catalog_index() -> PoolIndex:
    from overcast.catalog.load import load_offers
    from overcast.catalog.pools import build_pools

    return PoolIndex.build(build_pools(load_offers(), now=0.0))


def test_why_not_names_each_provider_with_the_filter_that_removed_its_last_pool() -> None:
    pools = [make_pool("aws", gpus=8), make_pool("azure"), make_pool("gcp", accelerator="A100")]
    job = make_job("big").gpus("H100", 64).with_(deny_providers=("azure",)).build()
    result = place_job(job, PoolIndex.build(pools), now=0.0)
    assert result.why_not() == (
        "no pool fits big (1 x H100:64):\n"
        "  aws: 1 pool offers H100 but none with 64 per node\n"
        "  azure: denied by resources.deny_providers\n"
        "  gcp: no pool offers H100"
    )
    assert result.summary().startswith(
        "no pool fits: aws: 1 pool offers H100 but none with 64 per node; azure:"
    )


def test_a_placed_job_has_no_why_not_but_lists_providers_without_candidates() -> None:
    pools = [make_pool("aws"), make_pool("gcp", accelerator="A100")]
    result = place_job(make_job().gpus("H100", 8).build(), PoolIndex.build(pools), now=0.0)
    assert result.why_not() == ""
    assert result.excluded == {"gcp": "no pool offers H100"}


def test_empty_index() -> None:
    result = place_job(make_job("x").gpus("H100", 8).build(), PoolIndex.build([]), now=0.0)
    assert result.ranked == []
    assert result.why_not() == "no pool fits x (1 x H100:8): the catalog has no pools"


def test_full_catalog_impossible_request_counts_pools_per_provider() -> None:
    index = catalog_index()
    result = place_job(make_job("b200x64").gpus("B200", 64).build(), index, now=0.0)
    assert result.ranked == []
    assert set(result.excluded) == set(index.providers.names)
    offering = {p.provider for p in index.pools if p.accelerator == "B200"}
    assert offering, "the bundled catalog sells B200 somewhere"
    for provider, why in result.excluded.items():
        if provider in offering:
            n = sum(1 for p in index.pools if p.provider == provider and p.accelerator == "B200")
            noun = "pool offers" if n == 1 else "pools offer"
            assert why == f"{n:,} {noun} B200 but none with 64 per node"
        else:
            assert why == "no pool offers B200"


def test_full_catalog_ranks_the_cheapest_h100_node_first() -> None:
    index = catalog_index()
    result = place_job(make_job().gpus("H100", 8).build(), index, now=0.0, top=5)
    cheapest = min(
        p.price_per_node_hour
        for p in index.pools
        if p.accelerator == "H100" and p.gpus_per_node == 8 and p.purchase.value == "on-demand"
    )
    assert result.ranked[0].hourly_cost == cheapest
    costs = [c.expected_cost for c in result.ranked]
    assert costs == sorted(costs)
