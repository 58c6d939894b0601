"""Pools from catalog offers plus the fleet file: where the scheduler can put work.

One pool per offer and purchase option (on-demand; spot when a spot price exists), one per active
reservation (RESERVED, with capacity), one per private cluster. Pool ids are stable:
``{provider}/{region}/{zone or '-'}/{instance_type}/{purchase}`` for cloud pools, ``slurm/<name>``,
``kubernetes/<name>`` and ``local/<name>`` for clusters (the ids their backends use).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from overcast.catalog.accelerators import memory_gib
from overcast.catalog.offer import Offer
from overcast.placement.pool import Pool, Purchase
from overcast.spec.infra import provider_name

if TYPE_CHECKING:  # fleet and snapshot pull in pydantic and yaml, which pools from offers alone never need
    from overcast.catalog.fleet import Cluster, Fleet, Reservation
    from overcast.scheduler.snapshot import Quota

# Assumed spot preemptions per node-hour when the fleet file gives none. AWS and GCP are measured from
# the SkyPilot "Can't Be Late" traces (/work/shared/data/skypilot-spot-traces, preemption/1-node: up->down
# transitions per hour up; see docs/catalog.md): AWS p3 V100 spot 2023-04 gave 0.47/h, GCP c3 spot
# 2023-04 gave 0.017/h. Other providers have no trace here: we assume one preemption per ten hours.
DEFAULT_PREEMPTIONS_PER_HOUR = {"aws": 0.47, "gcp": 0.017}
FALLBACK_PREEMPTIONS_PER_HOUR = 0.1


def pool_id(provider: str, region: str, zone: str | None, instance_type: str, purchase: Purchase) -> str:
    return f"{provider}/{region}/{zone or '-'}/{instance_type}/{purchase.value}"


def preemptions_per_hour(provider: str, fleet: Fleet | None = None) -> float:
    if fleet is not None and provider in fleet.spot_preemptions_per_hour:
        return fleet.spot_preemptions_per_hour[provider]
    return DEFAULT_PREEMPTIONS_PER_HOUR.get(provider, FALLBACK_PREEMPTIONS_PER_HOUR)


def whole_gpus(offer: Offer) -> int | None:
    """GPUs per node, or None for fractional-GPU offers (kept in listings, never pooled)."""
    count = offer.accelerator_count
    return int(count) if count >= 1 and count == int(count) else None


def _pool(offer: Offer, gpus: int, purchase: Purchase, price: float, **extra: object) -> Pool:
    return Pool(
        id=pool_id(offer.provider, offer.region, offer.zone, offer.instance_type, purchase),
        provider=offer.provider,
        region=offer.region,
        zone=offer.zone,
        instance_type=offer.instance_type,
        accelerator=offer.accelerator,
        gpus_per_node=gpus,
        purchase=purchase,
        price_per_node_hour=price,
        accelerator_memory_gib=offer.accelerator_memory_gib,
        vcpus_per_node=offer.vcpus,
        memory_gib_per_node=offer.memory_gib,
        **extra,  # type: ignore[arg-type]
    )


def offer_pools(offers: Sequence[Offer], fleet: Fleet | None = None) -> list[Pool]:
    """On-demand and spot pools for public offers (no capacity limit known)."""
    disabled = set(fleet.disabled_providers) if fleet else set()
    pools: list[Pool] = []
    for offer in offers:
        gpus = whole_gpus(offer)
        if gpus is None or offer.provider in disabled:
            continue
        if offer.price is not None:
            pools.append(_pool(offer, gpus, Purchase.ON_DEMAND, offer.price))
        if offer.spot_price is not None:
            rate = preemptions_per_hour(offer.provider, fleet)
            pools.append(_pool(offer, gpus, Purchase.SPOT, offer.spot_price, preemptions_per_hour=rate))
    return pools


def reservation_offer(reservation: Reservation, offers: Sequence[Offer]) -> Offer:
    """The catalog instance a reservation is made of: the named one, else the one with most GPUs there."""
    r = reservation
    here = [
        o
        for o in offers
        if o.provider == r.provider
        and o.region == r.region
        and (r.zone is None or o.zone == r.zone)
        and o.accelerator == r.accelerator
        and whole_gpus(o)
    ]
    if r.instance_type:
        here = [o for o in here if o.instance_type == r.instance_type]
    if r.gpus_per_node:
        here = [o for o in here if o.accelerator_count == r.gpus_per_node]
    if here:
        # most GPUs per node (a reservation is usually whole 8-GPU machines), then a stable name order
        best = min(here, key=lambda o: (-o.accelerator_count, o.instance_type, o.zone or ""))
        if r.gpus % best.accelerator_count:  # 4 GPUs of 8-GPU nodes would be a pool of 0 nodes
            raise ValueError(
                f"reservation of {r.gpus} {r.accelerator} in {r.provider} {r.region}: not a whole number "
                f"of {best.instance_type} nodes ({best.accelerator_count:g} GPUs each); make gpus a "
                "multiple of that or give gpus_per_node"
            )
        return dataclasses.replace(best, zone=r.zone)
    if r.instance_type and r.gpus_per_node:
        # capacity the public catalog does not list: trust the fleet file
        return Offer(r.provider, r.region, r.zone, r.instance_type, r.accelerator, r.gpus_per_node,
                     None, None, None, None, None)  # fmt: skip
    wanted = f"{r.accelerator} in {r.provider} {r.region}" + (
        f" ({r.instance_type})" if r.instance_type else ""
    )
    raise ValueError(
        f"reservation {wanted}: no such instance in the catalog; give instance_type and gpus_per_node"
    )


def reservation_pools(fleet: Fleet, offers: Sequence[Offer], now: float) -> list[Pool]:
    pools: list[Pool] = []
    seen: dict[str, int] = {}
    for r in fleet.reservations:
        if r.provider in fleet.disabled_providers or not r.active(now):
            continue
        offer = reservation_offer(r, offers)
        gpus = int(offer.accelerator_count)
        pool = _pool(offer, gpus, Purchase.RESERVED, r.price_per_gpu_hour * gpus,
                     capacity_nodes=r.gpus // gpus, labels={"until": r.until.isoformat()})  # fmt: skip
        seen[pool.id] = seen.get(pool.id, 0) + 1
        if seen[pool.id] > 1:  # two reservations of the same instance: keep both, distinct ids
            pool.id = f"{pool.id}#{seen[pool.id]}"
        pools.append(pool)
    return pools


def cluster_pool(cluster: Cluster) -> Pool:
    kind = cluster.kind  # the same ids, region and labels its backend's pool has
    region = cluster.region or ("local" if kind == "local" else cluster.name)
    acc = cluster.accelerator
    labels = {kind: "true"}
    if cluster.slurm is not None and cluster.slurm.partition:
        labels["partition"] = cluster.slurm.partition
    if cluster.kubernetes is not None:
        labels["namespace"] = cluster.kubernetes.namespace
    return Pool(
        id=f"{kind}/{cluster.name}",
        provider=cluster.provider or cluster.name,
        region=region,
        zone=None,
        instance_type=f"{kind}-{cluster.gpus_per_node}x{acc}" if cluster.gpus_per_node else f"{kind}-cpu",
        accelerator=acc if cluster.gpus_per_node else "",
        gpus_per_node=cluster.gpus_per_node,
        purchase=Purchase(cluster.purchase),
        price_per_node_hour=cluster.node_price,
        capacity_nodes=cluster.nodes,
        backend=cluster.backend,
        accelerator_memory_gib=memory_gib(acc) if acc else None,
        labels=labels,
    )


def build_pools(
    offers: Sequence[Offer], fleet: Fleet | None = None, *, now: float | None = None
) -> list[Pool]:
    """Every pool: public offers x purchase options, active reservations, private clusters.

    Disabled providers' pools, expired reservations and fractional-GPU offers are left out.
    """
    now = time.time() if now is None else now
    pools = offer_pools(offers, fleet)
    if fleet is not None:
        pools += reservation_pools(fleet, offers, now)
        disabled = set(fleet.disabled_providers)
        # disabled names are spelled as in the catalog ("AWS" -> "aws"); so compare a cluster's that way
        enabled = [c for c in fleet.clusters if provider_name(c.provider or c.name) not in disabled]
        pools += [cluster_pool(c) for c in enabled]
    return pools


def quotas(fleet: Fleet) -> list[Quota]:
    """The fleet file's GPU quotas, for ``Snapshot.quotas``."""
    from overcast.scheduler.snapshot import Quota

    return [Quota(provider=q.provider, region=q.region, max_gpus=q.max_gpus) for q in fleet.quotas]
