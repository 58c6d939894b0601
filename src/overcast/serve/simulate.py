"""The serving twin: one inference service replayed over real spot availability and a real request trace.

Same code as the live service: ``autoscale`` decides the replica target and ``plan_replicas`` decides where
replicas go (spread over zones, SpotHedge base + fallback); only the clock and the providers are simulated.

Inputs (read at run time from the data directory; the traces carry no license, so they are not shipped):
- spot availability: spothedge-traces/gcp_a100_2024/<zone>_a100_40gb_8.json — available spot instances per
  150 s tick in 6 GCP zones (SkyServe/SpotHedge artifact);
- load: spothedge-traces/maf1_requests_per_minute.csv — the Azure Functions (MAF) request-rate trace,
  scaled so that its 99th percentile tick asks for ``peak_replicas`` replicas.
Prices come from the bundled catalog (GCP on-demand and spot for ``instance_type`` in each zone).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from overcast.placement.pool import Pool, Purchase
from overcast.serve.autoscaler import ScaleState, autoscale
from overcast.serve.replicas import Replica, ReplicaState, plan_replicas
from overcast.spec.models import Autoscaling, ServiceSpec, SpotHedge

POLICIES = ("on-demand", "spot-only", "overcast")


@dataclass(frozen=True)
class ServingScenario:
    zones: dict[str, list[int]]  # zone -> available spot instances per tick
    tick_seconds: float
    rps: np.ndarray  # requests/s per tick
    spot_price: dict[str, float]  # zone -> $/h per replica
    on_demand_price: dict[str, float]
    target_rps_per_replica: float
    min_replicas: int = 2
    max_replicas: int = 16
    launch_ticks: int = 2  # provisioning + model load time, in ticks (2 x 150 s = 5 min)
    capacity_factor: float = 1.25  # a replica serves up to target x this before requests fail


@dataclass
class PolicyResult:
    policy: str
    cost: float = 0.0
    requests: float = 0.0
    served: float = 0.0
    preemptions: int = 0
    ticks: int = 0
    ticks_at_target: int = 0  # ticks with at least the autoscaler's target of ready replicas
    replica_hours: dict[str, float] = field(default_factory=dict)

    @property
    def availability(self) -> float:
        return self.served / self.requests if self.requests else 1.0

    @property
    def at_target(self) -> float:
        return self.ticks_at_target / self.ticks if self.ticks else 1.0


def _spec(policy: str, sc: ServingScenario) -> ServiceSpec:
    replicas = Autoscaling(
        min_replicas=sc.min_replicas,
        max_replicas=sc.max_replicas,
        target_rps_per_replica=sc.target_rps_per_replica,
        upscale_delay_seconds=sc.tick_seconds,
        downscale_delay_seconds=4 * sc.tick_seconds,
    )
    if policy == "on-demand":
        return ServiceSpec(name="svc", replicas=replicas)
    hedge = SpotHedge(base_on_demand=0, dynamic_fallback=False)
    if policy == "overcast":
        hedge = SpotHedge(base_on_demand=1, dynamic_fallback=True)
    # spread: no zone above half the replicas (zones stand for providers here: independent failure domains)
    return ServiceSpec(name="svc", replicas=replicas, spot_hedge=hedge, max_share_per_provider=0.5)


def simulate(sc: ServingScenario, policy: str) -> PolicyResult:
    spec = _spec(policy, sc)
    res = PolicyResult(policy)
    state = ScaleState(sc.min_replicas)
    replicas: dict[str, Replica] = {}
    ready_at: dict[str, int] = {}
    next_id = 0
    zones = sorted(sc.zones)
    n_ticks = min(len(sc.rps), *(len(v) for v in sc.zones.values()))
    hours = sc.tick_seconds / 3600
    for t in range(n_ticks):
        now = t * sc.tick_seconds
        # 1. the provider side: spot capacity in each zone; our excess spot replicas there are preempted
        for z in zones:
            ours = [
                r
                for r in replicas.values()
                if r.pool_id == f"{z}/spot" and r.state is not ReplicaState.FAILED
            ]
            for r in ours[sc.zones[z][t] :]:
                replicas[r.id] = Replica(
                    r.id, r.pool_id, r.provider, r.purchase, ReplicaState.FAILED, 1, r.fallback
                )
                res.preemptions += 1
        for rid, r in list(replicas.items()):
            if r.state is ReplicaState.LAUNCHING and ready_at[rid] <= t:
                replicas[rid] = Replica(
                    r.id, r.pool_id, r.provider, r.purchase, ReplicaState.READY, 1, r.fallback
                )
        # 2. serve this tick's load with the ready replicas
        ready = sum(1 for r in replicas.values() if r.state is ReplicaState.READY)
        demand = float(sc.rps[t]) * sc.tick_seconds
        res.requests += demand
        res.served += min(demand, ready * sc.target_rps_per_replica * sc.capacity_factor * sc.tick_seconds)
        res.ticks += 1
        res.ticks_at_target += ready >= state.target
        # 3. bill every replica that exists (launching ones too: the provider charges from boot)
        for r in replicas.values():
            if r.state is ReplicaState.FAILED:
                continue
            zone, kind = r.pool_id.split("/")
            price = sc.spot_price[zone] if kind == "spot" else sc.on_demand_price[zone]
            res.cost += price * hours
            res.replica_hours[kind] = res.replica_hours.get(kind, 0.0) + hours
        # 4. the control side: autoscale on the observed rate, then plan replicas (the production functions)
        state = autoscale(spec.replicas, state, float(sc.rps[t]), now)
        pools = _pools(sc, zones, t, replicas, policy)
        plan = plan_replicas(spec, state.target, 1, list(replicas.values()), pools)
        for rid in plan.retire:
            replicas.pop(rid, None)
        for launch in plan.launch:
            rid = f"r{next_id}"
            next_id += 1
            zone, kind = launch.pool_id.split("/")
            purchase = Purchase.SPOT if kind == "spot" else Purchase.ON_DEMAND
            replicas[rid] = Replica(
                rid, launch.pool_id, zone, purchase, ReplicaState.LAUNCHING, 1, launch.fallback
            )
            ready_at[rid] = t + sc.launch_ticks
    return res


def _pools(
    sc: ServingScenario, zones: list[str], t: int, replicas: dict[str, Replica], policy: str
) -> list[Pool]:
    """Pools a replica may use now, cheapest first; a spot pool's free nodes follow the availability trace."""
    pools = []
    for z in zones:
        used = sum(
            1 for r in replicas.values() if r.pool_id == f"{z}/spot" and r.state is not ReplicaState.FAILED
        )
        if policy != "on-demand":
            pools.append(_pool(z, Purchase.SPOT, sc.spot_price[z], capacity=sc.zones[z][t], used=used))
        if policy != "spot-only":
            pools.append(_pool(z, Purchase.ON_DEMAND, sc.on_demand_price[z], capacity=None, used=0))
    return sorted(pools, key=lambda p: p.price_per_node_hour)


def _pool(zone: str, purchase: Purchase, price: float, capacity: int | None, used: int) -> Pool:
    kind = "spot" if purchase is Purchase.SPOT else "on-demand"
    return Pool(
        id=f"{zone}/{kind}",
        provider=zone,
        region=zone.rsplit("-", 1)[0],
        zone=zone,
        instance_type="replica",
        accelerator="A100",
        gpus_per_node=8,
        purchase=purchase,
        price_per_node_hour=price,
        capacity_nodes=capacity,
        used_nodes=used,
    )


def load_scenario(
    data_dir: Path,
    *,
    instance_type: str = "a2-highgpu-8g",
    peak_replicas: int = 8,
    target_rps_per_replica: float = 10.0,
    hours: float | None = None,
) -> ServingScenario:
    """Build the serving scenario from the spothedge traces under ``data_dir`` and the bundled catalog."""
    from overcast.catalog.load import load_offers

    base = data_dir / "spothedge-traces"
    zones: dict[str, list[int]] = {}
    tick = 150.0
    for f in sorted((base / "gcp_a100_2024").glob("*_a100_40gb_8.json")):
        doc = json.loads(f.read_text())
        tick = float(doc["metadata"]["gap_seconds"])
        zones[f.name.split("_")[0]] = [int(v) for v in doc["data"]]
    if not zones:
        raise FileNotFoundError(f"no spot availability traces under {base / 'gcp_a100_2024'}")
    with (base / "maf1_requests_per_minute.csv").open() as fh:
        per_minute = np.array([float(row["Requests"]) for row in csv.DictReader(fh)])
    # resample requests/minute to requests/s per tick, then scale: the p99 tick needs peak_replicas
    cumulative = np.concatenate([[0.0], np.cumsum(per_minute)])  # requests before minute m
    edges = np.arange(0, len(per_minute) * 60 + 1, tick) / 60.0  # tick boundaries, in minutes
    at = np.interp(edges, np.arange(len(cumulative)), cumulative)
    rps = np.diff(at) / tick
    rps = np.minimum(rps / np.percentile(rps, 99), 1.0) * peak_replicas * target_rps_per_replica
    if hours is not None:
        rps = rps[: max(1, math.ceil(hours * 3600 / tick))]
    spot, od = {}, {}
    offers = [o for o in load_offers() if o.provider == "gcp" and o.instance_type == instance_type]
    for z in zones:
        match = [o for o in offers if o.zone == z] or [o for o in offers if o.region == z.rsplit("-", 1)[0]]
        if not match or match[0].price is None or match[0].spot_price is None:
            raise LookupError(f"the catalog has no on-demand and spot price for gcp {instance_type} in {z}")
        od[z], spot[z] = match[0].price, match[0].spot_price
    return ServingScenario(zones, tick, rps, spot, od, target_rps_per_replica)


def compare(sc: ServingScenario) -> list[PolicyResult]:
    return [simulate(sc, p) for p in POLICIES]
