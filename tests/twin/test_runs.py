"""Whole runs of the small scenario: conservation, determinism, the bound, a policy comparison, the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from overcast.cli.main import app
from overcast.placement.pool import Pool, Purchase
from overcast.twin.report import deterministic_part, report_data, write_report
from overcast.twin.runner import run_scenario
from overcast.twin.scenario import ScenarioError, load_scenario
from tests.twin.helpers import EXAMPLES, small_scenario

# needs only shipped data (catalog, pollux workload-6, GCP H100 probes for one zone)
POLICIES = ["overcast", "single-provider", "spillover", "cheapest-first"]


def _pool(name: str, purchase: Purchase, price: float, nodes: int = 1) -> Pool:
    """A one-GPU-per-node pool for the hand-made bound cases."""
    return Pool(
        id=name, provider=name, region="r", zone=None, instance_type="x", accelerator="H100",
        gpus_per_node=1, purchase=purchase, price_per_node_hour=price, capacity_nodes=nodes,
    )  # fmt: skip


@pytest.fixture(scope="module")
def scenario():
    return small_scenario(jobs=80)


@pytest.fixture(scope="module")
def runs(scenario):
    return {r.policy: r for r in run_scenario(scenario, POLICIES)}


def test_every_job_ends_exactly_once_and_paid_covers_used(scenario, runs):
    for name, run in runs.items():
        m = run.metrics
        assert m["jobs"] == 80 and m["finished"] + m["unfinished"] == 80, name
        assert m["unfinished"] == 0, name  # the drain is long enough for this load
        gpu_h = m["gpu_hours"]
        assert gpu_h["paid"] >= gpu_h["useful"] + gpu_h["lost_to_preemption"] - 1e-6, name
        assert 0 < m["goodput"] <= 1, name
        assert len(run.series["jct_hours"]) == 80, name


def test_no_pool_ever_holds_more_than_its_capacity(runs):
    assert {name: r.metrics["max_overcommit_nodes"] for name, r in runs.items()} == dict.fromkeys(runs, 0)


def test_same_seed_gives_the_same_json_apart_from_wall_time(scenario, runs):
    again = run_scenario(scenario, POLICIES)
    first = deterministic_part(report_data(scenario, scenario.seed, list(runs.values())))
    second = deterministic_part(report_data(scenario, scenario.seed, again))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_a_different_seed_gives_a_different_run(scenario, runs):
    other = run_scenario(scenario, ["spillover"], seed=scenario.seed + 1)[0]
    assert other.metrics != runs["spillover"].metrics


def test_cost_never_beats_the_lower_bound(runs):
    for name, run in runs.items():
        m = run.metrics
        assert m["cost_over_lower_bound"] >= 1.0, name
        assert m["cost_lower_bound"] >= m["cost_lower_bound_timeless"], name  # the larger valid one
        assert m["cost_lower_bound"] <= m["cost_lower_bound_at_run_pace"] <= m["cost_total"], name
        assert m["cost_reserved_fee"] <= m["cost_lower_bound_at_run_mean_jct"] <= m["cost_total"], name


def test_time_indexed_bound_keeps_work_after_its_submit():
    # one pool at $8/GPU-h (1 GPU/node) beside a free pool of 1 node: 2 GPU-h submitted at 0 fit the free
    # pool in two 1-hour slots, but 2 GPU-h submitted in the last slot need the paid pool for one of them
    from overcast.twin.metrics import time_indexed_lower_bound

    free, paid = _pool("free", Purchase.RESERVED, 1.0), _pool("paid", Purchase.ON_DEMAND, 8.0)
    edges = np.array([0.0, 3600.0, 7200.0])
    usable = {"free": np.array([3600.0, 3600.0]), "paid": np.array([3600.0, 3600.0])}
    early = time_indexed_lower_bound([(0.0, 7200.0, False)], [free, paid], usable, edges, 0.0)
    late = time_indexed_lower_bound([(3600.0, 7200.0, False)], [free, paid], usable, edges, 0.0)
    assert early.cost == pytest.approx(0.0) and late.cost == pytest.approx(8.0)


def test_more_providers_cut_queueing_against_one_provider(runs):
    single = runs["single-provider"].metrics
    for name in ("overcast", "spillover", "cheapest-first"):
        m = runs[name].metrics
        assert m["queue_delay_hours"]["mean"] < single["queue_delay_hours"]["mean"], name
        assert len(m["paid_gpu_hours_by_provider"]) > 1, name
    assert list(single["paid_gpu_hours_by_provider"]) == ["azure"]


def test_report_files(tmp_path, scenario, runs):
    data = write_report(scenario, scenario.seed, list(runs.values()), tmp_path, plots=True)
    assert set(data["policies"]) == set(POLICIES)
    text = (tmp_path / "report.md").read_text()
    assert "| overcast |" in text and "![jct_cdf.png](jct_cdf.png)" in text
    for png in ("cost.png", "queue.png", "gpus_by_provider.png", "jct_cdf.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_bundled_scenarios_validate():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        load_scenario(path)


def test_bad_scenario_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((EXAMPLES / "small.yaml").read_text().replace("duration_days: 1", "duration_days: -1"))
    with pytest.raises(ScenarioError, match=r"bad.yaml: duration_days: Input should be greater than 0"):
        load_scenario(bad)
    result = CliRunner().invoke(app, ["twin", "run", str(bad)])
    assert result.exit_code == 2 and "duration_days" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["twin", "run", str(EXAMPLES / "small.yaml"), "-p", "random"])
    assert result.exit_code == 2 and "unknown policy 'random'" in result.output


def test_cli_runs_two_scenarios_and_compares_them(tmp_path):
    text = (EXAMPLES / "small.yaml").read_text().replace("max_job_hours: 12", "max_job_hours: 12\n  jobs: 40")
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(text.replace("name: small", "name: lab"))
    # the same lab without its OCI quota
    second.write_text(
        text.replace("name: small", "name: lab-no-oci").replace(
            "purchase: on-demand, nodes: 8,\n     provision_minutes: 15",
            "purchase: on-demand, nodes: 0,\n     provision_minutes: 15",
        )
    )
    out = tmp_path / "out"
    args = [
        "twin",
        "run",
        str(first),
        str(second),
        "-p",
        "spillover",
        "-p",
        "single-provider",
        "--out",
        str(out),
        "--no-plots",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    comparison = (out / "comparison.md").read_text()
    assert "| lab-no-oci | spillover |" in comparison
    lab = json.loads((out / "lab" / "report.json").read_text())
    no_oci = json.loads((out / "lab-no-oci" / "report.json").read_text())
    assert "oci" in lab["policies"]["spillover"]["paid_gpu_hours_by_provider"]
    assert no_oci["policies"]["spillover"]["paid_gpu_hours_by_provider"].get("oci", 0) == 0


def test_same_json_across_processes_with_different_hash_seeds(tmp_path):
    """Set iteration order changes with PYTHONHASHSEED; the report must not."""
    import os
    import subprocess
    import sys

    scenario_file = tmp_path / "s.yaml"
    text = (EXAMPLES / "small.yaml").read_text()
    scenario_file.write_text(text.replace("max_job_hours: 12", "max_job_hours: 12\n  jobs: 40"))
    reports = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        cmd = [
            sys.executable,
            "-m",
            "overcast.cli.main",
            "twin",
            "run",
            str(scenario_file),
            "--out",
            str(out),
            "--no-plots",
            "-p",
            "overcast",
            "-p",
            "cheapest-first",
        ]
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
        reports.append(deterministic_part(json.loads((out / "report.json").read_text())))
    assert reports[0] == reports[1]


def test_time_indexed_bound_puts_a_gang_only_on_pools_it_fits():
    # a free 1-node pool and a $8/GPU-h 2-node pool: 2 GPU-h of one-node work fit the free pool over two
    # slots, but a 2-node gang cannot run there at all and pays for both GPU-hours
    from overcast.twin.bounds import time_indexed_lower_bound

    pools = [_pool("free", Purchase.RESERVED, 1.0, 1), _pool("paid", Purchase.ON_DEMAND, 8.0, 2)]
    edges = np.array([0.0, 3600.0, 7200.0])
    usable = {"free": np.full(2, 3600.0), "paid": np.full(2, 7200.0)}
    single = time_indexed_lower_bound([(0.0, 7200.0, False, 1)], pools, usable, edges, 0.0)
    gang = time_indexed_lower_bound([(0.0, 7200.0, False, 2)], pools, usable, edges, 0.0)
    assert single.cost == pytest.approx(0.0) and gang.cost == pytest.approx(16.0)


def test_mean_jct_bound_pays_for_the_completion_times_it_is_asked_for():
    # a free 1-GPU pool and a $8/GPU-h one; two 1 GPU-h jobs at 0. The free pool alone finishes one in
    # the first hour and one in the second (mean JCT 0.5 h counted from slot starts); mean 0 needs the
    # paid pool for one GPU-hour, a mean of 0.25 h for half of one
    from overcast.twin.jct_bound import mean_jct_lower_bound

    pools = [_pool("free", Purchase.RESERVED, 1.0), _pool("paid", Purchase.ON_DEMAND, 8.0)]
    edges = np.array([0.0, 3600.0, 7200.0, 10800.0])
    usable = {"free": np.full(3, 3600.0), "paid": np.full(3, 3600.0)}
    jobs = [(0.0, 3600.0, False, 1), (0.0, 3600.0, False, 1)]
    costs = [
        mean_jct_lower_bound(jobs, [3600.0, 3600.0], pools, usable, edges, 0.0, mean).cost
        for mean in (0.5, 0.25, 0.0)
    ]
    assert costs == pytest.approx([0.0, 4.0, 8.0])
