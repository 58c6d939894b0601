"""Each trace loader on its real file (skipped when the data directory is absent)."""

import numpy as np
import pytest

from overcast.twin import availability, loaders
from overcast.twin.workload import TraceJob, scale_jobs, to_nodes, to_sim_jobs
from tests.twin.helpers import needs_data


@needs_data
@pytest.mark.parametrize(
    ("name", "files", "count", "max_gpus"),
    [
        ("gavel", None, 11685, 64),
        ("alibaba", None, 4527, 8),
        ("pollux", ["workload-6"], 160, 48),
        ("sia", ["philly/workload-1"], 160, None),
        ("tiresias", None, 60, 8),
    ],
)
def test_workload_loader_reads_real_trace(name, files, count, max_gpus):
    jobs = loaders.load_trace(name, files, np.random.default_rng(0))
    assert len(jobs) == count
    assert all(j.duration > 0 and j.gpus > 0 and j.submit >= 0 for j in jobs)
    if max_gpus is not None:
        assert max(j.gpus for j in jobs) == max_gpus


@needs_data
def test_gavel_runtime_uses_gavel_throughputs():
    job = loaders.load_gavel(["0e4a51"])[0]  # Transformer bs128, 95,121 steps, 1 GPU, arrives at 0
    assert (job.submit, job.gpus, job.team) == (0.0, 1.0, "0e4a51")
    assert 100 < job.duration < 100 * 3600


@needs_data
@pytest.mark.parametrize(
    ("source", "series", "low", "high"),
    [
        ("skypilot", "availability/1-node/aws-02-15-2023/us-east-1a_v100_1", 0.05, 0.5),
        ("skypilot", "availability/16-node/aws-08-27-2023/us-west-2a_v100_1", 0.2, 0.8),
        ("sky2022", "2022-10-26T22-05/us-west-2a_v100_8", 0.1, 0.9),
        ("skynomad-gcp-h100", "us-central1-a", 0.5, 1.0),
        ("spothedge", "us-central1-a_a100_40gb_8", 0.5, 1.0),
    ],
)
def test_availability_loader_reads_real_trace(source, series, low, high):
    trace = availability.load_availability(source, series)
    assert trace.times[0] == 0 and np.all(np.diff(trace.times) > 0)
    assert np.all((trace.share >= 0) & (trace.share <= 1))
    assert np.all(trace.share[1:] != trace.share[:-1])  # change points only
    assert low < trace.mean() < high


@needs_data
def test_sky2022_is_the_inverse_of_the_skypilot_copy():
    a = availability.load_sky2022("2022-10-26T22-05/us-west-2a_v100_1")
    b = availability.load_skypilot("availability/1-node/aws-10-26-2022/us-west-2a_v100_1")
    assert a.mean() == pytest.approx(b.mean(), abs=0.02)


def test_unknown_trace_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown workload trace 'philly'"):
        loaders.load_trace("philly", None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown availability source"):
        availability.load_availability("azure", "x")


def test_gpu_mapping_rule_and_scaling():
    assert [to_nodes(g, 8, 8) for g in (0.25, 1, 2, 8)] == [1, 1, 2, 8]
    assert to_nodes(3, 1, 8) == 1
    jobs = [TraceJob(f"t{i}", float(i * 100), 1.0, 3600.0, "vc") for i in range(10)]
    scaled = scale_jobs(jobs, 35, duration=500.0, rng=np.random.default_rng(1))
    assert len(scaled) == 35 and all(0 <= j.submit < 500.0 for j in scaled)
    sim = to_sim_jobs(
        scaled,
        gpu_scale=8,
        gpus_per_node=8,
        speedup=2.0,
        spot_fraction=0.0,
        max_hours=None,
        max_nodes=None,
        teams=["a", "b"],
        rng=np.random.default_rng(1),
    )
    assert {j.work for j in sim} == {1800.0} and {j.team for j in sim} <= {"a", "b"}


def test_scaling_down_samples_the_whole_trace_not_its_start():
    jobs = [TraceJob(f"t{i}", float(i), 1.0, 60.0, "vc") for i in range(1000)]
    scaled = scale_jobs(jobs, 100, duration=1000.0, rng=np.random.default_rng(3))
    submits = sorted(j.submit for j in scaled)
    assert len(scaled) == 100 and submits[-1] > 800 and submits[0] < 200
