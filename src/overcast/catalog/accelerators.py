"""Accelerator names: one canonical spelling per chip that a workload can ask for.

Providers spell the same GPU many ways ("H100-SXM", "NVIDIA-H100-80GB-HBM3", "H100_NVLINK_80GB") and use
one spelling for different things. We merge names when the chips run the same code at about the same speed
with the same memory, and keep them apart when a job would notice the difference:

- H100 merges H100-SXM, H100-80GB, H100-SXM5 and H100-NVLINK: all the 80 GB SXM5 part on an HGX board.
- H100-PCIE stays apart (PCIe card: ~half the memory bandwidth and power, no NVLink switch).
- H100-NVL stays apart (94 GB dual-card PCIe product).
- H100-MEGA stays apart: the same GPU as H100, but GCP's a3-megagpu has 2x the GPU-to-GPU network
  (GPUDirect-TCPXO); for multi-node training that is a different machine. SkyPilot keeps it apart too.
- A100 (40 GB) vs A100-80GB, V100 (16 GB) vs V100-32GB: memory decides what fits, so they stay apart.
  A100 80 GB PCIe merges into A100-80GB (same memory, ~5% slower): users choose A100s by memory.
- A10G (AWS's A10 variant) stays apart from A10, and T4g (T4 on an Arm Graviton host) from T4, because
  the host architecture changes which images run; both as SkyPilot does.
- RTX6000 is the 24 GB Turing Quadro; RTX6000-Ada (48 GB) and RTXPRO6000 (96 GB Blackwell; workstation
  and server editions merged) are different chips.
- TPU slices keep SkyPilot's names ("tpu-v5p-8"): the slice size is part of the product.

Memory per accelerator comes from the shipped catalog's GpuInfo data, never from this file.
"""

from __future__ import annotations

import difflib
import re
from functools import cache

# canonical name -> other spellings seen in provider catalogs (compared after ``_key``)
ALIASES: dict[str, tuple[str, ...]] = {
    "H100": (
        "H100-80GB",
        "H100-SXM",
        "H100-SXM5",
        "H100-80G-SXM5",
        "H100-NVLINK",
        "H100-HBM3",
        "H100-80GB-HBM3",
    ),
    "H100-PCIE": ("H100-80G-PCIe", "H100-80G-PCIe-NVLink", "H100-PCIe-80GB"),
    "H100-NVL": ("H100-NVL-94GB",),
    "H100-MEGA": ("H100-MEGA-80GB", "a3-megagpu"),
    "H200": ("H200-141GB", "H200-SXM", "H200-SXM5"),
    "GH200": ("GH200-96GB",),
    "B200": ("B200-180GB", "B200-SXM"),
    "B300": ("B300-SXM",),
    "A100": ("A100-40GB", "A100-SXM4-40GB", "A100-PCIE-40GB"),
    "A100-80GB": ("A100-80G-PCIe", "A100-80G-PCIe-NVLink", "A100-SXM4-80GB", "A100-PCIE-80GB", "A100-80G"),
    "A10": ("A10-24GB",),
    "A10G": (),
    "A16": (),
    "A30": (),
    "A4000": ("RTX-A4000", "RTXA4000"),
    "A5000": ("RTX-A5000", "RTXA5000"),
    "A6000": ("RTX-A6000", "RTXA6000"),
    "L4": (),
    "L40": (),
    "L40S": (),
    "T4": (),
    "T4g": (),
    "V100": ("V100-16GB", "V100-SXM2-16GB"),
    "V100-32GB": ("V100-SXM2-32GB",),
    "P100": ("P100-PCIE-16GB",),
    "P4": (),
    "P4000": ("Quadro-P4000",),
    "M4000": ("Quadro-M4000",),
    "M60": (),
    "RTX6000": ("Quadro-RTX6000", "RTX-6000"),
    "RTX6000-Ada": ("RTX6000Ada", "RTX-6000-Ada", "RTX6000-Ada-48GB"),
    "RTXPRO6000": (
        "RTXPro6000",
        "RTX-PRO-6000",
        "RTX PRO 6000 96GB",
        "RTXPRO6000WS",
        "RTXPRO6000-WK",
        "RTX PRO Server 6000",
        "RTX PRO 6000 Blackwell",
    ),
    "RTX5880-Ada": (),
    "RTX3060": (),
    "RTX3070": (),
    "RTX3090": (),
    "RTX4060": (),
    "RTX4070": (),
    "RTX4090": (),
    "RTX5070": (),
    "RTX5090": (),
    "MI25": (),
    "MI300X": (),
    "V520": ("Radeon Pro V520",),
    "Gaudi": ("Gaudi HL-205", "Gaudi1"),
    "Gaudi2": ("Gaudi-2",),
    "Inferentia": ("Inferentia1",),
    "Inferentia2": (),
    "Trainium": ("Trainium1",),
    "Trainium2": (),
    "VU9P": ("Virtex UltraScale (VU9P)",),
    "VU47P": ("Virtex UltraScale+ (VU47P)",),
}

# what kind of accelerator a canonical name is; anything not listed is a GPU
KINDS: dict[str, str] = {
    "Gaudi": "asic", "Gaudi2": "asic", "Inferentia": "asic", "Inferentia2": "asic",
    "Trainium": "asic", "Trainium2": "asic", "VU9P": "fpga", "VU47P": "fpga",
}  # fmt: skip

_TPU = re.compile(r"^tpu-v[0-9a-z]+-\d+$")
# vendor words that never tell two chips apart
_VENDOR = re.compile(r"^(nvidia|amd|tesla|geforce|habana|intel|aws|google)[\s_-]+", re.IGNORECASE)


def _key(raw: str) -> str:
    """Lower-case, vendor prefix dropped, only letters and digits: "NVIDIA H100-80GB" -> "h10080gb"."""
    s = raw.strip()
    while _VENDOR.match(s):
        s = _VENDOR.sub("", s, count=1)
    return re.sub(r"[^a-z0-9]", "", s.lower())


@cache
def _table() -> dict[str, str]:
    table: dict[str, str] = {}
    for canonical, aliases in ALIASES.items():
        for spelling in (canonical, *aliases):
            table[_key(spelling)] = canonical
    return table


def canonical_name(raw: str) -> str | None:
    """The canonical name for ``raw`` ("nvidia-h100" -> "H100"), or None when we do not know it."""
    if not raw or not raw.strip():
        return None
    s = raw.strip()
    if _TPU.match(s.lower()):
        return s.lower()
    found = _table().get(_key(s))
    if found is not None:
        return found
    # names shipped in the catalog that the table does not list (new TPU slices, say)
    lowered = {name.lower(): name for name in known_accelerators()}
    return lowered.get(s.lower())


def accelerator_kind(name: str) -> str:
    """ "gpu", "tpu", "asic" or "fpga" for a canonical name."""
    if name.startswith("tpu-"):
        return "tpu"
    return KINDS.get(name, "gpu")


def known_accelerators() -> list[str]:
    """Every canonical accelerator name in the shipped catalog, sorted (a fresh list each call)."""
    from overcast.catalog.load import accelerator_names

    return list(accelerator_names())


def suggest(raw: str, n: int = 3) -> list[str]:
    """Up to ``n`` known names closest to ``raw``, best first (for "did you mean" messages)."""
    names = known_accelerators() or list(ALIASES)
    by_key: dict[str, str] = {}
    for name in names:
        by_key.setdefault(_key(name), name)
    keys = difflib.get_close_matches(_key(raw), list(by_key), n=n, cutoff=0.5)
    return [by_key[k] for k in keys]


def memory_gib(name: str) -> float | None:
    """Memory of one accelerator in GiB (the most common value in the catalog), or None if unknown."""
    from overcast.catalog.load import accelerator_memory

    canonical = canonical_name(name)
    return None if canonical is None else accelerator_memory().get(canonical)
