"""Arrival shapes: the Helios submission series and the re-timing rule (twin.arrivals)."""

import numpy as np
import pytest
import yaml

from overcast.twin.arrivals import HELIOS_DAYS, retime, shape_arrivals
from overcast.twin.loaders import load_helios_submissions
from overcast.twin.scenario import Arrivals, ScenarioError, parse_scenario
from overcast.twin.workload import TraceJob
from tests.twin.helpers import EXAMPLES, needs_data, small_scenario

DAY = 86400.0


def uniform_jobs(n: int, duration: float) -> list[TraceJob]:
    """Jobs arriving evenly, each with its own size and runtime, so attributes can be followed."""
    return [
        TraceJob(f"t{i}", i * duration / n, float(1 + i % 8), 600.0 + i, f"team{i % 3}") for i in range(n)
    ]


def per_bin(jobs: list[TraceJob], bins: int, duration: float) -> np.ndarray:
    return np.histogram([j.submit for j in jobs], bins=bins, range=(0.0, duration))[0]


@needs_data
def test_helios_loader_reads_real_file():
    counts = load_helios_submissions()
    assert len(counts) == HELIOS_DAYS * 144 and np.all(counts >= 0)
    by_hour = counts.reshape(-1, 24, 6).sum(axis=2).mean(axis=0)  # mean GPU-job submissions per hour
    assert by_hour[14:18].mean() > 3 * by_hour[3:7].mean()  # a working-day cluster: diurnal
    assert 50_000 < counts.sum() < 200_000
    with pytest.raises(ValueError, match="no column 'gpu_jobs'"):
        load_helios_submissions("gpu_jobs")


def test_retime_follows_the_series_and_keeps_the_jobs():
    bin_s, duration = 600.0, 2 * DAY + 300.0  # a partial last bin
    day = np.where((np.arange(144) // 6) % 24 >= 8, 10.0, 1.0)  # 10x the rate from 08:00
    counts = np.tile(day, 3)
    counts[30:36] = 0.0  # an hour with no submissions gets no arrivals
    jobs = uniform_jobs(4000, duration)
    out = retime(jobs, counts, bin_s, duration, np.random.default_rng(5))
    assert [j.name for j in out] == [j.name for j in jobs]  # arrival order kept
    assert [(j.gpus, j.duration, j.team) for j in out] == [(j.gpus, j.duration, j.team) for j in jobs]
    times = np.array([j.submit for j in out])
    assert np.all(np.diff(times) >= 0) and times.min() >= 0 and times.max() < duration
    hist = per_bin(out, 289, 289 * bin_s)
    assert hist[30:36].sum() == 0
    assert np.corrcoef(hist[:288], counts[:288])[0, 1] > 0.8
    day_share = hist[48:144].sum() / hist[:144].sum()  # the first day's arrivals after 08:00
    assert day_share == pytest.approx(counts[48:144].sum() / counts[:144].sum(), abs=0.02)
    again = retime(jobs, counts, bin_s, duration, np.random.default_rng(5))
    assert again == out
    assert retime(jobs, counts, bin_s, duration, np.random.default_rng(6)) != out


def test_retime_rejects_a_short_or_empty_series():
    jobs = uniform_jobs(10, DAY)
    with pytest.raises(ValueError, match="has 10 bins, the window needs 144"):
        retime(jobs, np.ones(10), 600.0, DAY, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no submissions"):
        retime(jobs, np.zeros(144), 600.0, DAY, np.random.default_rng(0))


def test_no_shape_leaves_jobs_and_randomness_alone():
    jobs = uniform_jobs(50, DAY)
    rng = np.random.default_rng(3)
    assert shape_arrivals(jobs, None, DAY, rng) is jobs
    assert rng.random() == np.random.default_rng(3).random()


@needs_data
def test_helios_shape_on_the_real_series():
    duration, start = 14 * DAY, 61  # 2020-06-01, a Monday
    jobs = uniform_jobs(3000, duration)
    spec = Arrivals(shape="helios-venus", start_day=start)
    rng = np.random.default_rng(11)
    out = shape_arrivals(jobs, spec, duration, rng)
    assert rng.random() == np.random.default_rng(11).random()  # a child stream: the world's draws stay
    assert all(0 <= j.submit < duration for j in out)
    hourly = per_bin(out, 14 * 24, duration)
    helios = load_helios_submissions()[start * 144 : (start + 14) * 144].reshape(-1, 6).sum(axis=1)
    assert np.corrcoef(hourly, helios)[0, 1] > 0.85
    assert np.corrcoef(per_bin(jobs, 14 * 24, duration), helios)[0, 1] < 0.3  # the input was flat
    assert shape_arrivals(jobs, spec, duration, np.random.default_rng(11)) == out
    late = Arrivals(shape="helios-venus", start_day=HELIOS_DAYS - 1)
    with pytest.raises(ValueError, match="start_day 152: the helios-venus series has 153 days"):
        shape_arrivals(jobs, late, duration, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("arrivals", "message"),
    [
        ({"shape": "alibaba"}, "small.yaml: workload.arrivals.shape: Input should be 'helios-venus'"),
        ({"shape": "helios-venus", "start_day": -1}, "workload.arrivals.start_day: Input should be greater"),
        ({"shape": "helios-venus", "day": 3}, "workload.arrivals.day: Extra inputs are not permitted"),
        ({"start_day": 3}, "workload.arrivals.shape: Field required"),
        ({"shape": "helios-venus", "start_day": 153}, "workload.arrivals.start_day: Input should be less"),
        ({"shape": "helios-venus", "start_day": 152.5}, "start_day: Input should be a valid integer"),
    ],
)
def test_bad_arrivals_field_is_a_scenario_error(arrivals, message):
    with pytest.raises(ScenarioError, match=message):
        small_scenario(arrivals=arrivals)


def test_window_past_the_series_is_a_scenario_error():
    data = yaml.safe_load((EXAMPLES / "small.yaml").read_text())
    data["duration_days"] = 2
    data["workload"]["arrivals"] = {"shape": "helios-venus", "start_day": 151}
    assert parse_scenario(data, "x.yaml").workload.arrivals == Arrivals(shape="helios-venus", start_day=151)
    data["workload"]["arrivals"]["start_day"] = 152
    with pytest.raises(ScenarioError, match=r"x\.yaml: .*workload\.arrivals\.start_day: .* 153 days"):
        parse_scenario(data, "x.yaml")


@needs_data
def test_build_world_reshapes_the_same_jobs_by_the_helios_series():
    from overcast.twin.runner import build_world
    from overcast.twin.scenario import load_scenario

    plain = load_scenario(EXAMPLES / "azure-lab-oci.yaml")
    shaped = load_scenario(EXAMPLES / "azure-lab-helios.yaml")
    a, b = build_world(plain, plain.seed), build_world(shaped, shaped.seed)

    def shape(jobs):
        return sorted((j.nodes, j.work, j.team, j.spot_ok) for j in jobs)

    assert shape(a.jobs) == shape(b.jobs)  # the same jobs, only their submit times move
    days = int(shaped.duration_days)
    start = shaped.workload.arrivals.start_day
    daily = load_helios_submissions()[start * 144 : (start + days) * 144].reshape(-1, 144).sum(axis=1)
    got = np.histogram([j.submit for j in b.jobs], bins=days, range=(0, days * DAY))[0]
    before = np.histogram([j.submit for j in a.jobs], bins=days, range=(0, days * DAY))[0]
    assert np.corrcoef(got, daily)[0, 1] > 0.7 > np.corrcoef(before, daily)[0, 1]
