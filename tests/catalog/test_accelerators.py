import pytest

from overcast.catalog.accelerators import (
    ALIASES,
    accelerator_kind,
    canonical_name,
    known_accelerators,
    memory_gib,
    suggest,
)
from overcast.catalog.load import load_offers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("H100", "H100"),
        ("h100", "H100"),
        ("h100-80gb", "H100"),
        ("nvidia-h100", "H100"),
        ("NVIDIA-H100-80GB-HBM3", "H100"),
        ("H100-SXM", "H100"),
        ("H100-80G-SXM5", "H100"),
        ("H100-NVLINK", "H100"),
        ("H100-MEGA", "H100-MEGA"),  # 2x network bandwidth: different machine for multi-node training
        ("H100 NVL", "H100-NVL"),  # 94 GB dual-card product
        ("H100-80G-PCIe", "H100-PCIE"),
        ("A100", "A100"),
        ("A100-80GB", "A100-80GB"),
        ("A100-80G-PCIe", "A100-80GB"),
        ("V100-32GB", "V100-32GB"),
        ("Tesla V100", "V100"),
        ("RTXA6000", "A6000"),
        ("RTX-A6000", "A6000"),
        ("RTX6000", "RTX6000"),
        ("RTX6000Ada", "RTX6000-Ada"),
        ("RTX PRO 6000 96GB", "RTXPRO6000"),
        ("RTXPRO6000WS", "RTXPRO6000"),
        ("RTX 3070", "RTX3070"),
        ("A10G", "A10G"),
        ("A10", "A10"),
        ("T4g", "T4g"),
        ("Gaudi HL-205", "Gaudi"),
        ("GAUDI2", "Gaudi2"),
        ("Virtex UltraScale (VU9P)", "VU9P"),
        ("tpu-v5p-8", "tpu-v5p-8"),
        ("TPU-V4-16", "tpu-v4-16"),
        ("  L40S ", "L40S"),
    ],
)
def test_canonical_name(raw: str, expected: str) -> None:
    assert canonical_name(raw) == expected


@pytest.mark.parametrize("raw", ["", "  ", "H10", "foo", "H100-H100", "tpu"])
def test_unknown_names_are_none(raw: str) -> None:
    assert canonical_name(raw) is None


def test_aliases_do_not_collide() -> None:
    seen: dict[str, str] = {}
    from overcast.catalog.accelerators import _key

    for canonical, aliases in ALIASES.items():
        for spelling in (canonical, *aliases):
            assert seen.setdefault(_key(spelling), canonical) == canonical, spelling


def test_known_accelerators_are_the_catalog_names() -> None:
    names = known_accelerators()
    assert set(names) == {o.accelerator for o in load_offers()}
    assert {"H100", "H200", "A100-80GB", "L4", "MI300X", "tpu-v5p-8"} <= set(names)
    assert all(canonical_name(n) == n for n in names)
    names.clear()  # a caller's list is its own: the cached names stay
    assert known_accelerators() and canonical_name("tpu-v5p-8") == "tpu-v5p-8"


def test_suggest_finds_close_names() -> None:
    assert suggest("H10")[0] == "H100"
    assert "A100-80GB" in suggest("a100-80")
    assert len(suggest("H100", n=2)) <= 2


def test_memory_comes_from_the_catalog() -> None:
    assert memory_gib("H100") == 80.0
    assert memory_gib("h100-80gb") == 80.0
    assert memory_gib("A100-80GB") == 80.0
    assert memory_gib("A100") == 40.0
    assert memory_gib("nonsense") is None


def test_kinds() -> None:
    assert accelerator_kind("H100") == "gpu"
    assert accelerator_kind("tpu-v4-8") == "tpu"
    assert accelerator_kind("Trainium2") == "asic"
    assert accelerator_kind("VU47P") == "fpga"
