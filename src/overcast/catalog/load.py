"""Load the catalog shipped in ``overcast/catalog/data`` (built by scripts/build_catalog.py).

The data is a gzipped JSON table (one list per row, in ``OFFER_FIELDS`` order): parsing it with the
C json module and building frozen dataclasses takes a few milliseconds, so we keep no other cache format.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from overcast.catalog.offer import Offer

DATA_DIR = Path(__file__).parent / "data"
OFFERS_FILE = "offers.json.gz"
SOURCE_FILE = "SOURCE.json"
OFFER_FIELDS = (
    "provider",
    "region",
    "zone",
    "instance_type",
    "accelerator",
    "accelerator_count",
    "accelerator_memory_gib",
    "vcpus",
    "memory_gib",
    "price",
    "spot_price",
)


class CatalogMissingError(RuntimeError):
    """The shipped catalog data is not there (a broken install, or the build script was never run)."""


def read_offers(data_dir: Path) -> list[Offer]:
    """Read the offers file in ``data_dir`` (no caching; ``load_offers`` caches the shipped one)."""
    path = data_dir / OFFERS_FILE
    if not path.exists():
        raise CatalogMissingError(f"catalog data not found: {path} (run scripts/build_catalog.py)")
    with gzip.open(path, "rb") as fh:
        table = json.load(fh)
    if tuple(table["fields"]) != OFFER_FIELDS:
        raise CatalogMissingError(f"{path}: fields {table['fields']} do not match {list(OFFER_FIELDS)}")
    return [Offer(*row) for row in table["rows"]]


@cache
def _offers() -> tuple[Offer, ...]:
    return tuple(read_offers(DATA_DIR))


def load_offers() -> list[Offer]:
    """Every offer in the shipped catalog (cached after the first call; the list is a fresh copy)."""
    return list(_offers())


def catalog_info() -> dict[str, Any]:
    """Sources (repo, commit, date, rows per file), row counts and the suspicious-row report."""
    path = DATA_DIR / SOURCE_FILE
    if not path.exists():
        raise CatalogMissingError(f"catalog source record not found: {path} (run scripts/build_catalog.py)")
    return json.loads(path.read_text())


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort "tpu-v4-8" before "tpu-v4-16", case-insensitively."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


@cache
def accelerator_names() -> tuple[str, ...]:
    """Sorted canonical accelerator names in the shipped catalog; empty when the data is missing."""
    try:
        offers = _offers()
    except CatalogMissingError:
        return ()
    return tuple(sorted({o.accelerator for o in offers}, key=natural_key))


@cache
def accelerator_memory() -> dict[str, float]:
    """Canonical name -> GiB per accelerator, the most common value across the catalog's offers."""
    try:
        offers = _offers()
    except CatalogMissingError:
        return {}
    counts: dict[str, Counter[float]] = {}
    for o in offers:
        if o.accelerator_memory_gib:
            counts.setdefault(o.accelerator, Counter())[o.accelerator_memory_gib] += 1
    return {name: c.most_common(1)[0][0] for name, c in counts.items()}
