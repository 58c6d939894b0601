"""Twin at scale: 30 simulated days, 100,000 GPUs over 7 providers, 1,000,000 jobs, under overcast's
decide() and the fixed-order spillover baseline (same scenario, same seed, same run).

Prints a table (setup time, wall and CPU time, events/s, decisions/s, decide() ms per cycle) and
writes bench/results/twin_scale.json. The spillover baseline is the reference: the ratios say what the
production scheduler costs over the simplest dispatcher at this size. Use --jobs / --days / --gpus to
scale down for a quick look. decide() runs at its defaults unless --decide-options says otherwise.

    .venv/bin/python bench/twin_scale.py                # full size (target: <= 10 min per policy)
    .venv/bin/python bench/twin_scale.py --jobs 100000 --days 3
    .venv/bin/python bench/twin_scale.py --decide-options '{"batch_threshold": 2000, "time_budget_s": 0.5}'
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from overcast.twin.runner import build_world, run_policy
from overcast.twin.scenario import parse_scenario

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "twin_scale.json"

# (provider, region, zone, instance type, purchase, share of the fleet's nodes, spot trace)
FLEET = [
    ("azure", "eastus", None, "Standard_ND96isr_H100_v5", "reserved", 0.20, None),
    ("azure", "westus3", None, "Standard_ND96isr_H100_v5", "on-demand", 0.06, None),
    ("azure", "southcentralus", None, "Standard_ND96isr_H100_v5", "on-demand", 0.04, None),
    ("oci", "us-ashburn-1", None, "BM.GPU.H100.8", "reserved", 0.15, None),
    ("oci", "us-phoenix-1", None, "BM.GPU.H100.8", "on-demand", 0.06, None),
    ("oci", "us-chicago-1", None, "BM.GPU.H100.8", "on-demand", 0.04, None),
    ("aws", "us-east-1", "use1-az2", "p5.48xlarge", "on-demand", 0.06, None),
    (
        "aws",
        "us-east-1",
        "use1-az2",
        "p5.48xlarge",
        "spot",
        0.05,
        ("skypilot", "availability/16-node/aws-08-27-2023/us-west-2a_v100_1"),
    ),
    ("aws", "us-west-2", None, "p5.48xlarge", "on-demand", 0.04, None),
    ("gcp", "us-central1", "us-central1-a", "a3-highgpu-8g", "on-demand", 0.05, None),
    (
        "gcp",
        "us-central1",
        "us-central1-a",
        "a3-highgpu-8g",
        "spot",
        0.05,
        ("skynomad-gcp-h100", "us-central1-a"),
    ),
    ("gcp", "us-east4", "us-east4-a", "a3-highgpu-8g", "spot", 0.04, ("skynomad-gcp-h100", "us-east4-a")),
    ("lambda", "us-east-1", None, "gpu_8x_h100_sxm5", "on-demand", 0.06, None),
    ("nebius", "eu-north1", None, "gpu-h100-sxm_8gpu-128vcpu-1600gb", "on-demand", 0.06, None),
    ("hyperstack", "US-1", None, "n3-H100-SXM5x8", "on-demand", 0.04, None),
]


def scenario(jobs: int, days: float, gpus: int, decide_options: dict | None = None) -> dict:
    nodes = gpus // 8
    pools = []
    for provider, region, zone, itype, purchase, share, trace in FLEET:
        pool = {
            "provider": provider,
            "region": region,
            "instance_type": itype,
            "purchase": purchase,
            "nodes": max(1, round(nodes * share)),
            "provision_minutes": 10,
        }
        if zone:
            pool["zone"] = zone
        if purchase == "reserved":
            pool["price_factor"] = 0.6
        if purchase == "on-demand":
            pool["stockouts"] = {"per_day": 0.3, "mean_hours": 4}
        if trace:
            pool["spot_trace"] = {"source": trace[0], "series": trace[1]}
        pools.append(pool)
    return {
        "name": f"scale-{jobs}-jobs-{gpus}-gpus-{days:g}d",
        "seed": 1,
        "duration_days": days,
        "drain_days": 2,
        "cycle_seconds": 300,
        # production decide() as shipped; cycles above its batch threshold (200 pending) use the batch
        # solver, which at this size finishes far inside its 2 s budget (tens of ms)
        "decide_options": decide_options or {},
        "home_provider": "azure",
        "spillover_order": ["azure", "oci", "aws", "gcp", "lambda", "nebius", "hyperstack"],
        "workload": {
            "trace": "gavel",
            "jobs": jobs,
            "max_job_hours": 4,
            "max_nodes": 64,
            "spot_fraction": 0.3,
            "teams": ["pretrain", "finetune", "eval", "research", "product"],
        },
        "pools": pools,
        "outages": [{"provider": "lambda", "start_hour": 100, "hours": 6}],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--gpus", type=int, default=100_000)
    parser.add_argument("--policy", action="append", help="default: spillover (baseline) and overcast")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--decide-options", type=json.loads, default={}, help="JSON keyword arguments for decide()"
    )
    args = parser.parse_args()
    spec = parse_scenario(scenario(args.jobs, args.days, args.gpus, args.decide_options), "bench")
    t0, c0 = time.perf_counter(), time.process_time()
    world = build_world(spec, spec.seed)
    setup = time.perf_counter() - t0, time.process_time() - c0
    rows = []
    for name in args.policy or ["spillover", "overcast"]:
        t0, c0 = time.perf_counter(), time.process_time()
        run = run_policy(spec, world, name, spec.seed)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        m, w = run.metrics, run.wall
        rows.append(
            {
                "policy": name,
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "events": m["events"],
                "events_per_s": w["events_per_second"],
                "decisions": m["decisions"],
                "decisions_per_s": w["decisions_per_second"],
                "cycles": m["cycles"],
                "decide_ms_mean": w["decide_ms_per_cycle"]["mean"],
                "decide_ms_p99": w["decide_ms_per_cycle"]["p99"],
                "decide_s_total": w["decide_seconds_total"],
                "finished": m["finished"],
                "unfinished": m["unfinished"],
                "cost": m["cost_total"],
                "cost_over_bound": m["cost_over_lower_bound"],
                "jct_mean_h": m["jct_hours"]["mean"],
                "queue_mean_h": m["queue_delay_hours"]["mean"],
                "max_overcommit_nodes": m["max_overcommit_nodes"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for row in rows:
        row["wall_vs_" + base["policy"]] = (
            round(row["wall_s"] / base["wall_s"], 2) if base["wall_s"] else None
        )
    header = (
        f"{'policy':<16}{'wall s':>9}{'cpu s':>9}{'events/s':>11}{'decisions/s':>13}{'decide ms':>11}"
        f"{'cost $':>16}{'JCT h':>8}{'unfin':>7}"
    )
    print(
        f"\n{spec.name}: {len(world.jobs):,} jobs, {args.gpus:,} GPUs, {len(spec.pools)} pools, "
        f"setup {setup[0]:.1f} s wall / {setup[1]:.1f} s CPU, decide options {args.decide_options or 'none'}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['policy']:<16}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{r['events_per_s']:>11,.0f}"
            f"{r['decisions_per_s']:>13,.0f}{r['decide_ms_mean']:>11.2f}{r['cost']:>16,.0f}"
            f"{r['jct_mean_h']:>8.2f}{r['unfinished']:>7}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "scenario": spec.name,
                "jobs": len(world.jobs),
                "gpus": args.gpus,
                "days": args.days,
                "pools": len(spec.pools),
                "providers": len({p.provider for p in spec.pools}),
                "decide_options": args.decide_options,
                "setup_wall_s": round(setup[0], 1),
                "machine": f"{platform.node()} {platform.processor()}",
                "runs": rows,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
