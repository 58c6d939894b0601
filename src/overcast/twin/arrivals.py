"""Arrival shapes: re-time a scaled workload so its arrival rate follows a real submission series.

Arrival-shape rule (documented in docs/twin.md): with ``workload.arrivals`` set, the jobs ``scale_jobs``
produced keep their sizes, runtimes, teams and order; only their submit times change. The window's
rate curve is the series' counts from ``start_day`` on (uniform inside each bin), and the ``n`` jobs,
in arrival order, take ``n`` sorted seeded uniform quantiles mapped through the inverse of its
cumulative curve: an inhomogeneous Poisson process with the series' diurnal and weekly pattern and
its bursts, conditioned on the job count. Off (``arrivals: null``), nothing changes and no random
number is drawn, so existing scenarios give the same results.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from overcast.twin.loaders import HELIOS_BIN_SECONDS, load_helios_submissions
from overcast.twin.workload import TraceJob

if TYPE_CHECKING:
    from overcast.twin.scenario import Arrivals

# days in the shared helios-venus split (2020-04-01 .. 2020-08-31; September is a holdout)
HELIOS_DAYS = 153


def retime(
    jobs: list[TraceJob],
    counts: np.ndarray,
    bin_seconds: float,
    duration: float,
    rng: np.random.Generator,
) -> list[TraceJob]:
    """``jobs`` re-timed inside ``[0, duration)`` so the arrival rate follows ``counts`` (one per bin
    of ``bin_seconds`` from time 0); see the module doc."""
    bins = math.ceil(duration / bin_seconds)
    if len(counts) < bins:
        raise ValueError(f"the arrival series has {len(counts)} bins, the window needs {bins}")
    weights = np.array(counts[:bins], dtype=float)  # a copy: the last bin is scaled below
    edges = np.minimum(np.arange(bins + 1) * bin_seconds, duration)
    weights[-1] *= (edges[-1] - edges[-2]) / bin_seconds  # a partial last bin counts pro rata
    cum = np.concatenate([[0.0], np.cumsum(weights)])
    if cum[-1] <= 0:
        raise ValueError("the arrival series has no submissions in the scenario's window")
    ordered = sorted(jobs, key=lambda j: (j.submit, j.name))
    u = np.sort(rng.random(len(ordered))) * cum[-1]
    # the bin holding each quantile: cum[k] <= u < cum[k + 1], so weights[k] > 0 (empty bins get none)
    k = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, bins - 1)
    t = edges[k] + (u - cum[k]) / weights[k] * (edges[k + 1] - edges[k])
    t = np.minimum(t, np.nextafter(duration, 0.0))
    return [dataclasses.replace(j, submit=float(s)) for j, s in zip(ordered, t, strict=True)]


def shape_arrivals(
    jobs: list[TraceJob], spec: Arrivals | None, duration: float, rng: np.random.Generator
) -> list[TraceJob]:
    """Apply ``workload.arrivals`` (``None``: ``jobs`` unchanged). Draws from a child of ``rng``, so the
    rest of the world (spot eligibility, stock-outs) is the same with and without a shape."""
    if spec is None:
        return jobs
    counts = load_helios_submissions()
    per_day = round(86400.0 / HELIOS_BIN_SECONDS)
    first = spec.start_day * per_day
    if first + math.ceil(duration / HELIOS_BIN_SECONDS) > len(counts):
        raise ValueError(
            f"workload.arrivals.start_day {spec.start_day}: the helios-venus series has "
            f"{len(counts) // per_day} days, the window runs past it"
        )
    return retime(jobs, counts[first:], HELIOS_BIN_SECONDS, duration, rng.spawn(1)[0])
