"""Workload trace loaders: each reads one real trace format into ``TraceJob`` rows.

Encodings differ per dataset (see each PROVENANCE.md); every loader documents what it reads and how
a job's runtime is obtained when the trace does not record it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from overcast.twin.datadir import SHIPPED, trace_path
from overcast.twin.workload import TraceJob


def load_gavel(files: list[str] | None = None, seed_dir: str = "seed=0") -> list[TraceJob]:
    """gavel-traces/msr: Philly per-VC arrivals and GPU counts; runtime = total_steps / the job type's
    isolated V100 throughput from Gavel's own ``simulation_throughputs.json`` (Gavel's rule)."""
    root = trace_path(f"gavel-traces/msr/{seed_dir}")
    throughputs = json.loads(trace_path("gavel-traces/simulation_throughputs.json").read_text())["v100"]
    paths = sorted(root.glob("*.trace")) if not files else [root / f"{f}.trace" for f in files]
    jobs: list[TraceJob] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"gavel trace {path.name!r} not found in {root}")
        vc = path.stem
        for n, line in enumerate(path.read_text().splitlines()):
            cols = line.split("\t")
            job_type, total_steps, arrival, scale = cols[0], float(cols[4]), float(cols[5]), int(cols[6])
            entry = throughputs.get(str((job_type, scale))) or throughputs[str((job_type, 1))]
            jobs.append(TraceJob(f"{vc}-{n}", arrival, float(scale), total_steps / entry["null"], vc))
    return jobs


def load_alibaba(file: str = "openb_pod_list_default.csv") -> list[TraceJob]:
    """alibaba-gpu-openb-2023 pods: GPU pods that were scheduled; runtime = deletion - scheduled;
    GPUs = num_gpu x gpu_milli / 1000 (fractional sharing); team = QoS class."""
    jobs = []
    with trace_path(f"alibaba-gpu-openb-2023/{file}").open() as fh:
        for row in csv.DictReader(fh):
            gpus = int(row["num_gpu"]) * int(row["gpu_milli"]) / 1000.0
            if gpus <= 0 or not row["scheduled_time"] or not row["deletion_time"]:
                continue
            start, end = float(row["scheduled_time"]), float(row["deletion_time"])
            if end <= start:
                continue
            jobs.append(TraceJob(row["name"], float(row["creation_time"]), gpus, end - start, row["qos"]))
    return jobs


def philly_runtimes() -> np.ndarray:
    """philly-runtime-alibaba: 83k Philly job runtimes in seconds (zeros dropped)."""
    path = trace_path("philly-runtime-alibaba/philly_runtime.csv")
    values = np.loadtxt(path, delimiter=",", skiprows=1, dtype=float)
    return np.sort(values[values > 0])


def philly_runtime_quantiles() -> tuple[np.ndarray, np.ndarray]:
    """The shipped 0.1%-step quantiles of ``philly_runtimes()`` (derived, CC BY 4.0; see SOURCES.md)."""
    table = np.loadtxt(SHIPPED / "philly_runtime_quantiles.csv", delimiter=",", skiprows=1)
    return table[:, 0], table[:, 1]


def _load_adaptdl(path: Path, rng: np.random.Generator) -> list[TraceJob]:
    """Pollux/Sia schema (name, time, application, num_replicas, batch_size). The traces carry no
    runtimes, so each job draws one from the Philly runtime distribution (they are Philly samples),
    by inverse-CDF sampling of its shipped quantiles, so runs are identical with or without the data dir."""
    levels, values = philly_runtime_quantiles()
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    draws = np.interp(rng.random(len(rows)), levels, values)
    return [
        TraceJob(
            f"{path.stem}-{r['name']}", float(r["time"]), float(r["num_replicas"]), float(d), r["application"]
        )
        for r, d in zip(rows, draws, strict=True)
    ]


def load_pollux(files: list[str] | None = None, rng: np.random.Generator | None = None) -> list[TraceJob]:
    rng = rng or np.random.default_rng(0)
    root = trace_path("pollux-workloads/workloads")
    names = files or ["workload-6"]
    return [job for name in names for job in _load_adaptdl(root / f"{name}.csv", rng)]


def load_sia(files: list[str] | None = None, rng: np.random.Generator | None = None) -> list[TraceJob]:
    """sia-workloads: ``files`` are "philly/workload-1", "saturn/workload-3", "newtrace/workload-2"..."""
    rng = rng or np.random.default_rng(0)
    root = trace_path("sia-workloads")
    names = files or ["newtrace/workload-1"]
    return [job for name in names for job in _load_adaptdl(root / f"{name}.csv", rng)]


def load_tiresias(file: str = "60_job.csv") -> list[TraceJob]:
    """tiresias-traces/60_job.csv: num_gpu, submit_time, duration (s), model_name as team."""
    with trace_path(f"tiresias-traces/{file}").open() as fh:
        return [
            TraceJob(
                f"tiresias-{r['job_id']}",
                float(r["submit_time"]),
                float(r["num_gpu"]),
                float(r["duration"]),
                r["model_name"],
            )
            for r in csv.DictReader(fh)
        ]


HELIOS_THROUGHPUT = "helios-venus-aggregates/venus_cluster_throughput.csv"
HELIOS_START = datetime(2020, 4, 1)  # the series' first bin; a Wednesday, cluster (China) time
HELIOS_BIN_SECONDS = 600.0


def load_helios_submissions(column: str = "submit_gpu_job") -> np.ndarray:
    """helios-venus-aggregates: submissions per 10-minute bin of SenseTime's Venus cluster from
    ``HELIOS_START`` (``submit_gpu_job``: GPU jobs). S-Lab License 1.0, non-commercial: read from the
    data directory only, never shipped. Bins must be contiguous (the file has no gaps; one would
    shift the diurnal pattern)."""
    counts = []
    with trace_path(HELIOS_THROUGHPUT).open() as fh:
        for n, row in enumerate(csv.DictReader(fh)):
            if n == 0 and column not in row:
                raise ValueError(f"{HELIOS_THROUGHPUT} has no column {column!r}")
            expected = HELIOS_START + timedelta(seconds=n * HELIOS_BIN_SECONDS)
            if datetime.fromisoformat(row["time"]) != expected:
                raise ValueError(f"{HELIOS_THROUGHPUT} row {n + 2}: {row['time']}, expected {expected}")
            counts.append(float(row[column]))
    return np.array(counts)


def load_trace(name: str, files: list[str] | None, rng: np.random.Generator) -> list[TraceJob]:
    """Dispatch by trace name; ``files`` picks a subset where the trace has several files."""
    loaders: dict[str, Callable[[], list[TraceJob]]] = {
        "gavel": lambda: load_gavel(files),
        "alibaba": lambda: load_alibaba(*(files or [])[:1]),
        "pollux": lambda: load_pollux(files, rng),
        "sia": lambda: load_sia(files, rng),
        "tiresias": lambda: load_tiresias(*(files or [])[:1]),
    }
    if name not in loaders:
        raise ValueError(f"unknown workload trace {name!r}; choose one of {', '.join(sorted(loaders))}")
    return loaders[name]()
