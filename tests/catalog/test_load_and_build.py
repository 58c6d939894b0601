from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from overcast.catalog.build import build, write
from overcast.catalog.load import DATA_DIR, catalog_info, load_offers, read_offers
from overcast.catalog.offer import Offer
from overcast.catalog.sources import read_rows
from tests.catalog.builders import NO_SOURCE, SOURCE_DIR


def test_load_offers_is_cached_and_a_fresh_list() -> None:
    first, second = load_offers(), load_offers()
    assert first == second and first is not second
    assert all(isinstance(o, Offer) for o in first[:10])
    first.clear()
    assert load_offers()


def test_catalog_info_records_every_source() -> None:
    info = catalog_info()
    assert "not stated" in info["license"]
    providers = {f["provider"] for f in info["files"]}
    assert {"azure", "gcp", "aws", "oci", "lambda", "nebius", "vast", "shadeform"} <= providers
    for f in info["files"]:
        assert f["repo"].startswith("https://github.com/")
        assert f["commit"] and len(f["commit"]) == 40, f
        assert len(f["sha256"]) == 64 and f["rows"] >= f["accelerator_rows"] >= f["offers"]
    anycloud = [f for f in info["files"] if "anycloud" in f["repo"]]
    assert all(f["date"] for f in anycloud)
    assert info["totals"]["offers"] == len(load_offers())


def test_every_offer_is_normalised() -> None:
    for o in load_offers():
        assert o.provider == o.provider.lower() and o.region and o.instance_type and o.accelerator
        assert o.accelerator_count > 0
        assert o.price is None or o.price > 0
        assert o.spot_price is None or o.spot_price > 0
        assert o.price is not None or o.spot_price is not None


@pytest.mark.skipif(not SOURCE_DIR.exists(), reason=NO_SOURCE)
def test_build_reproduces_the_shipped_data(tmp_path: Path) -> None:
    write(build(SOURCE_DIR), tmp_path)
    for name in ("offers.json.gz", "SOURCE.json", "SUSPICIOUS.md"):
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), name
    assert read_offers(tmp_path) == load_offers()


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    from overcast.catalog.load import CatalogMissingError

    with pytest.raises(CatalogMissingError, match=r"run scripts/build_catalog\.py"):
        read_offers(tmp_path)


def test_loading_offers_and_pools_stays_lean() -> None:
    # pools from offers alone need neither pydantic nor yaml (~150 ms of imports in a cold process)
    code = (
        "import sys; from overcast.catalog.load import load_offers; "
        "from overcast.catalog.pools import build_pools; build_pools(load_offers(), now=0); "
        "print(sorted(m for m in ('pydantic', 'yaml', 'rich', 'typer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_read_rows_mends_azure_rows_and_counts_file_lines(tmp_path: Path) -> None:
    # Azure writes Generation "V1,V2" unquoted: one field too many; a short row is padded
    path = tmp_path / "azure_vms.csv"
    path.write_text("InstanceType,Price,Generation\nA,1.5,V1,V2\n\nB,2.0\n")
    assert list(read_rows(path)) == [
        (2, {"InstanceType": "A", "Price": "1.5", "Generation": "V1,V2"}),
        (4, {"InstanceType": "B", "Price": "2.0", "Generation": ""}),
    ]
