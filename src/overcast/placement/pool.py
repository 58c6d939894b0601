"""A pool: where capacity comes from.

offer (or cluster partition) x purchase option x limit, plus a learned health. A gang is always placed
inside one pool, so one pool must be one fast network: a zone or region of a cloud, or one cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Purchase(StrEnum):
    RESERVED = "reserved"  # already paid for: marginal cost is ~0, accounting uses list price
    ON_DEMAND = "on-demand"
    SPOT = "spot"


class Health(StrEnum):
    OK = "ok"
    OUT_OF_CAPACITY = "out-of-capacity"  # cooling down until ``Pool.unhealthy_until``
    DOWN = "down"


@dataclass(slots=True)
class Pool:
    id: str  # stable and unique, e.g. "oci/us-ashburn-1/BM.GPU.H100.8/reserved"
    provider: str
    region: str
    zone: str | None
    instance_type: str
    accelerator: str  # normalised name; "" for CPU-only pools
    gpus_per_node: int
    purchase: Purchase
    price_per_node_hour: float  # list price of one node-hour (what accounting charges)
    capacity_nodes: int | None = None  # None: no known limit (public on-demand)
    used_nodes: int = 0
    backend: str = "catalog"  # which backend launches here: "local:azure-local", "slurm:oci-hpc", "twin"...
    accelerator_memory_gib: float | None = None
    vcpus_per_node: float | None = None
    memory_gib_per_node: float | None = None
    health: Health = Health.OK
    unhealthy_until: float | None = None  # epoch seconds (virtual in the twin)
    preemptions_per_hour: float = 0.0  # learned or assumed spot preemption rate
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def free_nodes(self) -> int | None:
        if self.capacity_nodes is None:
            return None
        return max(0, self.capacity_nodes - self.used_nodes)

    @property
    def marginal_price_per_node_hour(self) -> float:
        """What one more node-hour costs us now: reserved capacity is already paid for."""
        return 0.0 if self.purchase is Purchase.RESERVED else self.price_per_node_hour

    def usable(self, now: float) -> bool:
        if self.health is Health.DOWN:
            return False
        if self.health is Health.OUT_OF_CAPACITY:
            return self.unhealthy_until is not None and now >= self.unhealthy_until
        return True
