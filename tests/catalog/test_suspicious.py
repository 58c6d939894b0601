"""Suspicious rows are reported, not silently used: synthetic rows always, real rows when the data is here."""

from __future__ import annotations

import pytest

from overcast.catalog.load import catalog_info
from overcast.catalog.normalise import normalise_row, parse_gpu_info
from overcast.catalog.sources import read_rows
from tests.catalog.builders import NO_SOURCE, SOURCE_DIR


def _row(**fields: str) -> dict[str, str]:
    base = {
        "InstanceType": "x.8gpu",
        "AcceleratorName": "H100",
        "AcceleratorCount": "8",
        "vCPUs": "96",
        "MemoryGiB": "1024",
        "GpuInfo": "{'Gpus': [{'Name': 'H100', 'Count': 8, 'MemoryInfo': {'SizeInMiB': 81920}}]}",
        "Price": "20.0",
        "SpotPrice": "",
        "Region": "r1",
    }
    return base | fields


def _reasons(row: dict[str, str], provider: str = "p") -> tuple[object, set[str]]:
    offer, findings = normalise_row(provider, "f.csv:2", row)
    return offer, {f.reason for f in findings}


def test_clean_row_has_no_findings() -> None:
    offer, reasons = _reasons(_row())
    assert reasons == set()
    assert offer is not None and offer.accelerator_memory_gib == 80.0 and offer.price == 20.0


@pytest.mark.parametrize(
    ("fields", "reason", "kept"),
    [
        ({"AcceleratorCount": "0.25"}, "fractional-gpu", True),
        ({"AcceleratorCount": "4"}, "count-mismatch", True),
        ({"AcceleratorCount": ""}, "bad-count", False),
        ({"AcceleratorCount": "nan"}, "bad-count", False),
        ({"Price": "inf"}, "no-price", False),
        ({"Price": "0", "SpotPrice": "3.0"}, "zero-price", True),  # a 0 price is no price: spot only
        ({"Price": "0"}, "no-price", False),
        ({"Price": "0.0", "SpotPrice": "0.0"}, "no-price", False),
        ({"Price": "", "SpotPrice": "3.0"}, "no-on-demand-price", True),
        ({"SpotPrice": "0.00"}, "zero-spot-price", True),
        ({"Region": ""}, "missing-region", False),
        ({"AcceleratorName": "Warp9000"}, "unknown-accelerator", True),
        ({"GpuInfo": "{'Gpus': [{'Count': 8, 'MemoryInfo': {'SizeInMiB': 0}}]}"}, "no-gpu-memory", True),
        ({"AcceleratorName": "A100", "AcceleratorCount": "1",
          "GpuInfo": "{'Gpus': [{'Count': 1, 'MemoryInfo': {'SizeInMiB': 81920}}]}"},
         "memory-contradicts-name", True),
    ],
)  # fmt: skip
def test_suspicious_rows_are_flagged(fields: dict[str, str], reason: str, kept: bool) -> None:
    row = _row(**fields)
    offer, reasons = _reasons(row)
    assert reason in reasons
    assert (offer is not None) == kept


def test_memory_variant_is_renamed() -> None:
    row = _row(AcceleratorName="A100", AcceleratorCount="1",
               GpuInfo="{'Gpus': [{'Count': 1, 'MemoryInfo': {'SizeInMiB': 81920}}]}")  # fmt: skip
    offer, _ = _reasons(row)
    assert offer is not None and offer.accelerator == "A100-80GB"


def test_provider_memory_quirks() -> None:
    info = "{'Gpus': [{'Name': 'A6000', 'Count': 8, 'MemoryInfo': {'SizeInMiB': 48}}]}"
    offer, _ = _reasons(_row(AcceleratorName="A6000", GpuInfo=info), provider="shadeform")
    assert offer is not None and offer.accelerator_memory_gib == 48.0  # Shadeform writes GB
    info = "{'Gpus': [{'Name': 'RTX5090', 'Count': 2, 'MemoryInfo': {'SizeInMiB': 65214}}]}"
    offer, _ = _reasons(_row(AcceleratorName="RTX5090", AcceleratorCount="2", GpuInfo=info), provider="vast")
    assert offer is not None and offer.accelerator_memory_gib == pytest.approx(31.84, abs=0.01)  # Vast: total


def test_gpu_info_formats() -> None:
    assert parse_gpu_info('{"Gpus": [{"Count": 1}]}') == {"gpus": [{"count": 1}]}  # JSON (verda)
    assert parse_gpu_info("{'Gpus': [{'Manufacturer': null, 'Count': 2}]}") == {
        "gpus": [{"manufacturer": None, "count": 2}]
    }  # Python quoting with JSON null (hyperstack)
    assert parse_gpu_info("V100") is None  # just a name (IBM)


def test_shipped_report_counts_flagged_and_excluded_rows() -> None:
    info = catalog_info()
    suspicious = info["suspicious"]
    assert {"fractional-gpu", "zero-spot-price", "no-price", "missing-region", "count-mismatch"} <= set(
        suspicious
    )
    assert suspicious["fractional-gpu"]["by_provider"]["aws"] > 0
    excluded = sum(e["rows"] for e in suspicious.values() if e["action"] == "excluded")
    assert info["totals"]["excluded_rows"] == excluded
    assert sum(f["excluded"] for f in info["files"]) + suspicious["duplicate"]["rows"] == excluded


def _real(file: str, instance: str) -> tuple[object, set[str]]:
    provider = file.split("_", 1)[0]
    for line, row in read_rows(SOURCE_DIR / "skypilot-catalog" / file):
        if row["InstanceType"] == instance:
            offer, findings = normalise_row(provider, f"{file}:{line}", row)
            return offer, {f.reason for f in findings}
    raise AssertionError(f"{instance} not in {file}")


@pytest.mark.skipif(not SOURCE_DIR.exists(), reason=NO_SOURCE)
def test_real_suspicious_rows() -> None:
    # yotta: an 8-GPU instance whose GpuInfo says Count 1
    offer, reasons = _real("yotta_v8_vms.csv", "8x112v952g_NVIDIA_GeForce_RTX_5090_32G_SECURE")
    assert "count-mismatch" in reasons and offer is not None and offer.accelerator_count == 8
    # AWS g6f: a quarter of an L4
    offer, reasons = _real("aws_v9_vms_GPU_ONLY.csv", "g6f.2xlarge")
    assert "fractional-gpu" in reasons and offer is not None and offer.accelerator_count == 0.25
    # seeweb: an H100 with no region
    offer, reasons = _real("seeweb_v9_vms.csv", "ECS1GPU8")
    assert offer is None and reasons == {"missing-region"}
    # AWS p5e.48xlarge: no on-demand price upstream, spot only
    offer, reasons = _real("aws_v9_vms_GPU_ONLY.csv", "p5e.48xlarge")
    assert reasons == {"no-on-demand-price"} and offer is not None
    assert offer.price is None and offer.spot_price is not None and offer.accelerator == "H200"
