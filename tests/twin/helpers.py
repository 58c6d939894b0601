"""Shared helpers for twin tests: the small example scenario, shrunk, and a data-dir skip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from overcast.twin.datadir import data_dir
from overcast.twin.scenario import Scenario, parse_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "twin"

needs_data = pytest.mark.skipif(
    data_dir() is None, reason="trace data directory absent (set OVERCAST_DATA_DIR)"
)


def small_scenario(**workload: object) -> Scenario:
    """examples/twin/small.yaml with optional workload overrides (e.g. fewer jobs for speed)."""
    data = yaml.safe_load((EXAMPLES / "small.yaml").read_text())
    data["workload"].update(workload)
    return parse_scenario(data, "small.yaml")
