"""One row of a provider's catalog, normalised."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Offer:
    provider: str  # "azure", "oci", "aws", "gcp", "lambda", "nebius", ...
    region: str
    zone: str | None
    instance_type: str
    accelerator: str  # normalised name, see catalog.accelerators
    accelerator_count: float  # per instance; < 1 for fractional GPUs
    accelerator_memory_gib: float | None
    vcpus: float | None
    memory_gib: float | None
    price: float | None  # on-demand $/hour per instance; None when not sold on demand
    spot_price: float | None  # spot / preemptible $/hour per instance; None when not offered

    @property
    def price_per_gpu(self) -> float | None:
        return None if self.price is None else self.price / self.accelerator_count

    @property
    def spot_price_per_gpu(self) -> float | None:
        return None if self.spot_price is None else self.spot_price / self.accelerator_count
