"""Test builders for catalog tests: offers and fleet files in one line each."""

from __future__ import annotations

from pathlib import Path

from overcast.catalog.offer import Offer

SOURCE_DIR = Path("/work/shared/data/cloud-gpu-catalogs")
NO_SOURCE = "raw catalogs absent: /work/shared/data/cloud-gpu-catalogs is not on this machine"


def make_offer(
    provider: str = "aws",
    accelerator: str = "H100",
    count: float = 8,
    *,
    region: str = "us-east-1",
    zone: str | None = None,
    instance_type: str | None = None,
    price: float | None = 80.0,
    spot: float | None = None,
    memory: float | None = 80.0,
) -> Offer:
    return Offer(
        provider=provider,
        region=region,
        zone=zone,
        instance_type=instance_type or f"{accelerator.lower()}x{count:g}",
        accelerator=accelerator,
        accelerator_count=count,
        accelerator_memory_gib=memory,
        vcpus=8 * count,
        memory_gib=64 * count,
        price=price,
        spot_price=spot,
    )


def write_fleet(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path
