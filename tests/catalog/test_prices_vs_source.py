"""The shipped prices are the source rows' prices: read the raw CSVs here, independently, and compare."""

from __future__ import annotations

import csv
import json
import math
from functools import cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

from overcast.catalog.accelerators import canonical_name
from overcast.catalog.load import catalog_info, load_offers
from overcast.cli.main import app
from tests.catalog.builders import NO_SOURCE, SOURCE_DIR

needs_source = pytest.mark.skipif(not SOURCE_DIR.exists(), reason=NO_SOURCE)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        # Azure's unquoted "V1,V2" spills into an extra field after the last column: drop it
        return [dict(zip(header, row[: len(header)], strict=False)) for row in reader if row]


def _price(text: str) -> float | None:
    return float(text) if text.strip() and float(text) > 0 else None


def _source_prices() -> dict[tuple[str, str, str, str], tuple[float | None, float | None]]:
    """(provider, region, zone or '', instance type) -> (price, spot) for every non-GCP source row."""
    out = {}
    for entry in catalog_info()["files"]:
        if entry["provider"] == "gcp":
            continue
        for r in _rows(SOURCE_DIR / entry["file"]):
            key = (entry["provider"], r.get("Region", ""), r.get("AvailabilityZone", ""), r["InstanceType"])
            out.setdefault(key, (_price(r.get("Price", "")), _price(r.get("SpotPrice", ""))))
    return out


@cache
def _gcp_rows() -> tuple[dict, dict]:
    """GCP's raw file: host VM rows by (zone, instance type), accelerator rows by (zone, name, count)."""
    hosts: dict[tuple[str, str], dict[str, str]] = {}
    accelerators: dict[tuple[str, str, float], dict[str, str]] = {}
    for r in _rows(SOURCE_DIR / "anycloud-sh/gcp_vms.csv"):
        if r["AcceleratorName"]:
            key = (r["AvailabilityZone"], r["AcceleratorName"], float(r["AcceleratorCount"]))
            accelerators.setdefault(key, r)  # repeated TPU rows: the build keeps the first
        else:
            hosts.setdefault((r["AvailabilityZone"], r["InstanceType"]), r)
    return hosts, accelerators


def _gcp_price(zone: str, instance: str, raw_name: str, count: float) -> tuple[float | None, ...]:
    """GCP: a GPU row plus its host VM row (a TPU row alone), both read from the raw file."""
    hosts, accelerators = _gcp_rows()
    row = accelerators[(zone, raw_name, count)]
    host = hosts.get((zone, instance.split("+", 1)[0]))
    if host is None:  # a TPU: its row prices the whole VM
        return _price(row["Price"]), _price(row["SpotPrice"])
    return tuple(
        _price(str(float(row[c]) + float(host[c]))) if row[c] and host[c] else None
        for c in ("Price", "SpotPrice")
    )


def _close(a: float | None, b: float | None) -> bool:
    return a == b if a is None or b is None else math.isclose(a, b, rel_tol=1e-9)


@needs_source
def test_every_shipped_offer_has_its_source_price() -> None:
    source = _source_prices()
    checked = 0
    for o in load_offers():
        if o.provider == "gcp":
            continue
        price, spot = source[(o.provider, o.region, o.zone or "", o.instance_type)]
        assert (o.price, o.spot_price) == (price, spot), o
        checked += 1
    assert checked > 4000


@needs_source
def test_every_gcp_offer_is_its_accelerator_row_plus_its_host_vm() -> None:
    _, accelerators = _gcp_rows()
    # the raw spelling of each canonical name GCP uses ("H100", "tpu-v5p-8"); GCP has one per chip
    raw_names = {canonical_name(name) or name: name for _, name, _ in accelerators}
    offers = [o for o in load_offers() if o.provider == "gcp"]
    for o in offers:
        price, spot = _gcp_price(o.zone or "", o.instance_type, raw_names[o.accelerator], o.accelerator_count)
        assert _close(o.price, price) and _close(o.spot_price, spot), o
    assert len(offers) > 2000


@needs_source
def test_h100x8_from_ten_providers_at_source_prices() -> None:
    result = CliRunner().invoke(app, ["gpus", "H100:8", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    providers = {r["provider"] for r in rows}
    assert len(providers) >= 10
    assert {"azure", "oci", "aws", "gcp"} <= providers
    source = _source_prices()
    for r in rows:
        assert r["accelerator"] == "H100" and r["accelerator_count"] == 8
        if r["provider"] == "gcp":
            price, spot = _gcp_price(r["zone"], r["instance_type"], "H100", 8)
            assert _close(r["price"], price) and _close(r["spot_price"], spot)
        else:
            key = (r["provider"], r["region"], r["zone"] or "", r["instance_type"])
            assert (r["price"], r["spot_price"]) == source[key]
        assert math.isclose(r["price_per_gpu"], r["price"] / 8)


@needs_source
def test_cheapest_per_provider_is_really_the_cheapest() -> None:
    rows = json.loads(CliRunner().invoke(app, ["gpus", "H100:8", "--json"]).output)
    for r in rows:
        others = [
            o.price_per_gpu
            for o in load_offers()
            if o.provider == r["provider"]
            and o.accelerator == "H100"
            and o.accelerator_count == 8
            and o.price
        ]
        assert r["price_per_gpu"] == min(others)
