"""Turn one provider catalog row into an ``Offer``, and say what looked wrong with it.

Suspicious rows are never used silently: every finding becomes a ``Finding`` with what we did about it
(kept as is, fixed, or excluded), which the build script prints and stores in SUSPICIOUS.md.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from typing import Any

from overcast.catalog.accelerators import canonical_name
from overcast.catalog.offer import Offer

# a name that the memory contradicts: (name, at least this many GiB per GPU) -> the name the memory means.
# Users choose these parts by memory, so the memory wins (seeweb sells 80 GB A100s as "A100").
MEMORY_VARIANTS = {"A100": (70.0, "A100-80GB"), "V100": (24.0, "V100-32GB")}
# Shadeform's GpuInfo "SizeInMiB" is really the marketing "GB" of the card (48 for an A6000), which for
# GPU memory means binary gigabytes; we take it as GiB so it agrees with the other providers.
MEMORY_IN_GB = {"shadeform"}
# Vast's GpuInfo "SizeInMiB" is the memory of all the instance's GPUs together (2x RTX5090: 65214 MiB).
MEMORY_IS_TOTAL = {"vast"}


@dataclass(frozen=True, slots=True)
class Finding:
    provider: str
    source: str  # file:line
    instance_type: str
    region: str
    reason: str  # short code, e.g. "fractional-gpu"
    detail: str
    action: str  # "kept", "fixed" or "excluded"


def _number(text: str | None) -> float | None:
    """A finite number, or None: float() also reads "nan" and "inf", which no price or count can be."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _lower_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value


def parse_gpu_info(text: str) -> dict[str, Any] | None:
    """GpuInfo as a dict with lower-case keys; None when it is just a name ("V100") or empty."""
    text = text.strip()
    if not text.startswith("{"):
        return None
    # JSON (verda), Python literals (most), and Python quoting with JSON's null (hyperstack)
    python_text = text.replace(": null", ": None").replace(": true", ": True").replace(": false", ": False")
    for parse, source in ((json.loads, text), (ast.literal_eval, text), (ast.literal_eval, python_text)):
        try:
            value = parse(source)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict):
            return _lower_keys(value)
    return None


def gpu_info_facts(info: dict[str, Any] | None, provider: str) -> tuple[float | None, float | None]:
    """(GPU count, GiB per GPU) stated in GpuInfo; either may be None."""
    gpus = (info or {}).get("gpus") or []
    if not gpus or not isinstance(gpus[0], dict):
        return None, None
    first = gpus[0]
    count = first.get("count")
    size = (first.get("memoryinfo") or {}).get("sizeinmib")
    if isinstance(size, int | float) and size > 0 and provider in MEMORY_IS_TOTAL:
        size = size / count if isinstance(count, int | float) and count >= 1 else None
    if isinstance(size, int | float) and size > 0:
        memory = float(size) if provider in MEMORY_IN_GB else round(size / 1024, 2)
    else:
        memory = None
    return (float(count) if isinstance(count, int | float) else None), memory


def normalise_row(
    provider: str, source: str, row: dict[str, str], instance_type: str | None = None
) -> tuple[Offer | None, list[Finding]]:
    """One accelerator row -> (offer or None when excluded, findings)."""
    itype = (instance_type if instance_type is not None else row.get("InstanceType", "")).strip()
    region = row.get("Region", "").strip()
    findings: list[Finding] = []

    def flag(reason: str, detail: str, action: str) -> None:
        findings.append(Finding(provider, source, itype, region, reason, detail, action))

    raw_name = row.get("AcceleratorName", "").strip()
    name = canonical_name(raw_name)
    if name is None:
        flag("unknown-accelerator", f"AcceleratorName {raw_name!r} is not in the name table", "kept")
        name = raw_name
    if not region:
        flag("missing-region", "Region is empty: nowhere to launch it", "excluded")
        return None, findings
    count = _number(row.get("AcceleratorCount"))
    if count is None or count <= 0:
        flag("bad-count", f"AcceleratorCount {row.get('AcceleratorCount')!r}", "excluded")
        return None, findings

    info_count, memory = gpu_info_facts(parse_gpu_info(row.get("GpuInfo", "")), provider)
    if count < 1:
        flag("fractional-gpu", f"{count:g} of a GPU per instance: not used for pools", "kept")
    elif info_count is not None and info_count != count:
        flag("count-mismatch", f"AcceleratorCount {count:g} but GpuInfo Count {info_count:g}", "kept")
    if memory is None and row.get("GpuInfo", "").strip().startswith("{"):
        flag("no-gpu-memory", "GpuInfo gives no (or zero) memory size", "kept")
    variant = MEMORY_VARIANTS.get(name)
    if variant and memory is not None and memory >= variant[0]:
        flag("memory-contradicts-name", f"{raw_name} with {memory:g} GiB: renamed {variant[1]}", "fixed")
        name = variant[1]

    price = _number(row.get("Price"))
    spot = _number(row.get("SpotPrice"))
    if price is not None and price <= 0:
        flag("zero-price", f"Price {row.get('Price')!r}: treated as not sold on demand", "fixed")
        price = None
    if spot is not None and spot <= 0:
        flag("zero-spot-price", f"SpotPrice {row.get('SpotPrice')!r}: treated as no spot offer", "fixed")
        spot = None
    if price is None and spot is None:
        flag("no-price", "neither an on-demand nor a spot price", "excluded")
        return None, findings
    if price is None:
        flag("no-on-demand-price", "only a spot price: offered as spot only", "kept")

    zone = row.get("AvailabilityZone", "").strip() or None
    offer = Offer(
        provider=provider,
        region=region,
        zone=zone,
        instance_type=itype,
        accelerator=name,
        accelerator_count=count,
        accelerator_memory_gib=memory,
        vcpus=_number(row.get("vCPUs")),
        memory_gib=_number(row.get("MemoryGiB")),
        price=price,
        spot_price=spot,
    )
    return offer, findings
