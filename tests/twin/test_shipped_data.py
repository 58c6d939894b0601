"""Shipped derived data matches its source in the data directory (skipped when that is absent)."""

import csv

import numpy as np

from overcast.twin.datadir import SHIPPED, data_dir
from overcast.twin.loaders import philly_runtime_quantiles, philly_runtimes
from tests.twin.helpers import needs_data


@needs_data
def test_pollux_copy_is_identical():
    rel = "pollux-workloads/workloads/workload-6.csv"
    assert (SHIPPED / rel).read_bytes() == (data_dir() / rel).read_bytes()


@needs_data
def test_skynomad_rows_are_the_source_rows_for_the_shipped_zone():
    rel = "skynomad-spot-traces/gcp_h100_spot_probes_2025-10.csv"
    with (SHIPPED / rel).open() as fh:
        shipped = list(csv.DictReader(fh))
    with (data_dir() / rel).open() as fh:
        source = [{k: r[k] for k in shipped[0]} for r in csv.DictReader(fh) if r["zone"] == "us-central1-a"]
    assert shipped == source


@needs_data
def test_philly_quantiles_are_the_runtime_quantiles():
    levels, values = philly_runtime_quantiles()
    expected = np.quantile(philly_runtimes(), levels)
    assert np.allclose(values, expected, atol=0.06)
