"""Scenario pools -> contract ``Pool`` objects priced from the bundled catalog."""

from __future__ import annotations

from overcast.catalog.offer import Offer
from overcast.placement.pool import Pool, Purchase
from overcast.twin.scenario import PoolSpec, Scenario, ScenarioError


def pool_id(spec: PoolSpec) -> str:
    where = f"{spec.region}/{spec.zone}" if spec.zone else spec.region
    return f"{spec.provider}/{where}/{spec.instance_type}/{spec.purchase.value}"


def find_offer(spec: PoolSpec, offers: list[Offer]) -> Offer:
    matches = [
        o
        for o in offers
        if o.provider == spec.provider and o.region == spec.region and o.instance_type == spec.instance_type
    ]
    if spec.zone:
        matches = [o for o in matches if o.zone == spec.zone] or matches
    if not matches:
        raise ScenarioError(
            f"pool {pool_id(spec)}: no catalog offer for {spec.provider} {spec.instance_type} "
            f"in {spec.region}"
        )
    # several zones can list the same type: take the cheapest list price, deterministically
    return min(matches, key=lambda o: (o.price or float("inf"), o.spot_price or float("inf"), o.zone or ""))


def build_pools(scenario: Scenario, offers: list[Offer]) -> list[tuple[Pool, PoolSpec]]:
    out: list[tuple[Pool, PoolSpec]] = []
    seen: set[str] = set()
    for spec in scenario.pools:
        pid = pool_id(spec)
        if pid in seen:
            raise ScenarioError(f"pool {pid} is listed twice")
        seen.add(pid)
        offer = find_offer(spec, offers)
        list_price = offer.spot_price if spec.purchase is Purchase.SPOT else offer.price
        price = spec.price_per_node_hour or (list_price * spec.price_factor if list_price else None)
        if price is None:
            raise ScenarioError(
                f"pool {pid}: the catalog has no {spec.purchase.value} price; set price_per_node_hour"
            )
        gpus = round(offer.accelerator_count)
        if gpus != scenario.workload.gpus_per_node:
            raise ScenarioError(
                f"pool {pid}: {gpus} GPUs per node, but the workload uses "
                f"{scenario.workload.gpus_per_node}-GPU nodes"
            )
        pool = Pool(
            id=pid,
            provider=spec.provider,
            region=spec.region,
            zone=spec.zone or offer.zone,
            instance_type=spec.instance_type,
            accelerator=offer.accelerator,
            gpus_per_node=gpus,
            purchase=spec.purchase,
            price_per_node_hour=float(price),
            capacity_nodes=spec.nodes,
            backend="twin",
            accelerator_memory_gib=offer.accelerator_memory_gib,
            vcpus_per_node=offer.vcpus,
            memory_gib_per_node=offer.memory_gib,
        )
        out.append((pool, spec))
    return out
