"""Spot availability traces: the share of a pool's spot capacity that a provider would give, over time.

Every source is normalised to ``AvailabilityTrace`` (change points: seconds from trace start -> share
0..1). Encodings differ (see each PROVENANCE.md): skypilot-spot-traces count available instances
(1 = available); sky-spot-availability-2022 stores the inverse (1 = unavailable); the skynomad GCP H100
probes give instances created out of 16 requested per 10-minute round; spothedge uses the skypilot
convention. Traces shorter than a simulation are replayed in a loop.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from overcast.twin.datadir import trace_path

SOURCES = ("skypilot", "sky2022", "skynomad-gcp-h100", "spothedge")


@dataclass(frozen=True, slots=True)
class AvailabilityTrace:
    name: str
    times: np.ndarray  # change points, seconds from start (first is 0)
    share: np.ndarray  # share of capacity available from each change point on
    period: float  # length of the trace; replay loops after this

    def mean(self) -> float:
        durations = np.diff(np.append(self.times, self.period))
        return float((durations * self.share).sum() / self.period)


def _compress(name: str, times: np.ndarray, share: np.ndarray, period: float) -> AvailabilityTrace:
    keep = np.ones(len(share), dtype=bool)
    keep[1:] = share[1:] != share[:-1]
    times = times[keep] - times[0]
    return AvailabilityTrace(name, times, share[keep], max(period, float(times[-1]) + 1.0))


def _from_ticks(name: str, values: list[float], gap: float, scale: float) -> AvailabilityTrace:
    share = np.clip(np.asarray(values, dtype=float) / scale, 0.0, 1.0)
    times = np.arange(len(share), dtype=float) * gap
    return _compress(name, times, share, len(share) * gap)


def load_skypilot(series: str) -> AvailabilityTrace:
    """``series`` like "availability/1-node/aws-02-15-2023/us-east-1a_v100_1" (N-node dirs count of N)."""
    path = trace_path(f"skypilot-spot-traces/{series}.json")
    doc = json.loads(path.read_text())
    nodes = next((int(p.split("-")[0]) for p in series.split("/") if p.endswith("-node")), 1)
    return _from_ticks(series, doc["data"], float(doc["metadata"]["gap_seconds"]), float(nodes))


def load_spothedge(series: str) -> AvailabilityTrace:
    """``series`` like "us-central1-a_a100_40gb_8" from spothedge-traces/gcp_a100_2024."""
    doc = json.loads(trace_path(f"spothedge-traces/gcp_a100_2024/{series}.json").read_text())
    return _from_ticks(series, doc["data"], float(doc["metadata"]["gap_seconds"]), 1.0)


def load_sky2022(series: str) -> AvailabilityTrace:
    """``series`` like "2022-10-26T22-05/us-west-2a_v100_8"; the stored value is 1 - availability."""
    rows = trace_path(f"sky-spot-availability-2022/{series}.txt").read_text().split()
    stamps, values = [], []
    for row in rows:
        _, stamp, value = row.split(",")
        stamps.append(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
        values.append(1.0 - float(value))
    times = np.asarray(stamps) - stamps[0]
    gap = float(np.median(np.diff(times))) if len(times) > 1 else 600.0
    return _compress(series, times, np.asarray(values), float(times[-1]) + gap)


def load_skynomad_gcp_h100(zone: str) -> AvailabilityTrace:
    """GCP H100 spot probes: share = instances created / requested (capacity-exhausted rounds -> < 1)."""
    stamps, values = [], []
    with trace_path("skynomad-spot-traces/gcp_h100_spot_probes_2025-10.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["zone"] != zone:
                continue
            stamps.append(datetime.fromisoformat(row["scheduled_at_utc"].replace("Z", "+00:00")).timestamp())
            values.append(int(row["instances_created"]) / max(1, int(row["instances_requested"])))
    if not stamps:
        raise ValueError(f"no GCP H100 probes for zone {zone!r} in skynomad-spot-traces")
    order = np.argsort(stamps, kind="stable")
    times = np.asarray(stamps)[order]
    return _compress(
        f"gcp-h100/{zone}", times - times[0], np.asarray(values)[order], float(times[-1] - times[0]) + 600
    )


def load_availability(source: str, series: str) -> AvailabilityTrace:
    loaders = {
        "skypilot": load_skypilot,
        "sky2022": load_sky2022,
        "skynomad-gcp-h100": load_skynomad_gcp_h100,
        "spothedge": load_spothedge,
    }
    if source not in loaders:
        raise ValueError(f"unknown availability source {source!r}; choose one of {', '.join(SOURCES)}")
    return loaders[source](series)
