"""Benchmark: batch placement solver vs its greedy fallback on generated queues.

    python bench/batch_placement.py            # J in {1k, 10k, 50k} x P in {300, 1000}, flat and tiered,
                                               # plus 10k x 1k and 50k x 1k with longer budgets
    python bench/batch_placement.py --quick    # about 30 s: 1k and 10k jobs x 300 pools, flat only
    python bench/batch_placement.py --case 10000 1000 [--tiered] [--budget 1.5] [--profile] [--seed 2]
                                               # one row, not written to results; --profile prints the
                                               # top of a CPU-time cProfile of the solve

Each row solves one generated queue (bench/queue_gen.py, seed 1; --seed with --case) twice in this
process: the greedy fallback alone (the baseline) and the full pipeline (``solve(method="auto")``) with
the row's time budget. "flat" queues have one priority level (the notes' setting); "tiered" queues have
three levels, so the priority rule binds and costs objective (the LP bound ignores the rule, so it is
still a valid bound). Columns: wall and CPU seconds (CPU = this process; the LP and MILPs are
single-threaded; ``child_cpu_s`` in the JSON is the CPU time of the forked children: the last
column-generation flows, the side MILP), objective, LP bound, gap = (obj - LB) / obj, value gap = (obj -
LB) / (sum of penalties - LB), the greedy's gap, greedy/pipeline objective ratio, jobs placed.
Writes bench/results/batch_placement.json (or batch_placement_quick.json).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.queue_gen import generate
from overcast.placement.batch import check_solution, greedy, solve

RESULTS = Path(__file__).resolve().parent / "results"


def budget_for(n_jobs: int) -> float:
    return 8.0 if n_jobs >= 50_000 else 1.5


def run_row(
    n_jobs: int, n_pools: int, levels: int, budget: float | None, profile: bool = False, seed: int = 1
) -> dict:
    t0 = time.perf_counter()
    queue = generate(n_jobs, n_pools, seed=seed, priority_levels=levels)
    gen_s = time.perf_counter() - t0
    problem = queue.problem
    wall, cpu = time.perf_counter(), time.process_time()
    base = greedy(problem)
    g_wall, g_cpu = time.perf_counter() - wall, time.process_time() - cpu
    budget = budget_for(n_jobs) if budget is None else budget
    prof = cProfile.Profile(time.process_time) if profile else None
    wall, cpu, child = time.perf_counter(), time.process_time(), _children_cpu()
    if prof is not None:
        prof.enable()
    sol = solve(problem, time_budget_s=budget)
    s_wall, s_cpu = time.perf_counter() - wall, time.process_time() - cpu
    s_child = _children_cpu() - child
    if prof is not None:
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    assert check_solution(problem, sol.assignment, sol.objective) == []
    lb = sol.lower_bound
    g_gap = (base.objective - lb) / base.objective if base.objective > 0 else 0.0
    demand = float(queue.gpus.sum())
    return {
        "jobs": n_jobs,
        "pools": n_pools,
        "queue": "flat" if levels == 1 else "tiered",
        "seed": seed,
        "pairs": problem.n_pairs,
        "load": demand / queue.supply_gpus,
        "load_average": os.getloadavg()[0],
        "generate_s": gen_s,
        "budget_s": budget,
        "wall_s": s_wall,
        "cpu_s": s_cpu,
        "child_cpu_s": s_child,
        "objective": sol.objective,
        "lower_bound": lb,
        "gap": sol.gap,
        "value_gap": sol.value_gap,
        "placed": sol.placed,
        "method": sol.method,
        "status": sol.status,
        "stages_s": sol.timings,
        "greedy_wall_s": g_wall,
        "greedy_cpu_s": g_cpu,
        "greedy_objective": base.objective,
        "greedy_gap": g_gap,
        "greedy_placed": base.placed,
        "greedy_over_pipeline": base.objective / sol.objective if sol.objective > 0 else 1.0,
    }


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children (solve's forked helpers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'jobs':>6} {'pools':>5} {'queue':>6} {'load':>5} {'wall s':>7} {'cpu s':>6} {'objective':>13} "
        f"{'LP bound':>13} {'gap %':>6} {'vgap %':>6} {'greedy s':>8} {'greedy gap %':>12} "
        f"{'greedy/pipe':>11} {'placed':>7}  budget method"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['jobs']:>6} {r['pools']:>5} {r['queue']:>6} {r['load']:>5.2f} {r['wall_s']:>7.2f} "
            f"{r['cpu_s']:>6.2f} {r['objective']:>13,.0f} {r['lower_bound']:>13,.0f} {100 * r['gap']:>6.2f} "
            f"{100 * r['value_gap']:>6.2f} {r['greedy_wall_s']:>8.2f} {100 * r['greedy_gap']:>12.2f} "
            f"{r['greedy_over_pipeline']:>11.3f} {r['placed']:>7}  {r['budget_s']:g}s {r['method']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid, about 30 s")
    parser.add_argument("--budget", type=float, default=None, help="time budget per solve (default by size)")
    parser.add_argument("--case", type=int, nargs=2, metavar=("JOBS", "POOLS"), help="run one row only")
    parser.add_argument("--tiered", action="store_true", help="with --case: three priority levels")
    parser.add_argument("--profile", action="store_true", help="with --case: cProfile (CPU time) of solve")
    parser.add_argument("--seed", type=int, default=1, help="with --case: queue generator seed (default 1)")
    args = parser.parse_args()
    if args.case:
        row = run_row(*args.case, 3 if args.tiered else 1, args.budget, profile=args.profile, seed=args.seed)
        print_table([row])
        print("stages (wall s):", {k: round(v, 3) for k, v in row["stages_s"].items()})
        print(f"child processes' CPU s: {row['child_cpu_s']:.2f}")
        print(f"machine load average (1 min): {row['load_average']:.2f}")
        return
    if args.quick:
        grid = [(1_000, 300, 1, None), (10_000, 300, 1, None), (1_000, 300, 3, None)]
    else:
        grid = [(j, p, lv, None) for lv in (1, 3) for j in (1_000, 10_000, 50_000) for p in (300, 1_000)]
        # The 10k x 1k target is 2 s wall: budget 1.9 s leaves the check and hand-out inside it.
        # What more improvement time buys (big-gang MILP, split-MILP, LNS) on the two target sizes.
        grid += [(10_000, 1_000, 1, 1.9), (10_000, 1_000, 1, 30.0), (50_000, 1_000, 1, 120.0)]
    rows = []
    for n_jobs, n_pools, levels, budget in grid:
        rows.append(run_row(n_jobs, n_pools, levels, args.budget if budget is None else budget))
        print(
            f"done {n_jobs} x {n_pools} ({'flat' if levels == 1 else 'tiered'})", file=sys.stderr, flush=True
        )
    print_table(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("batch_placement_quick.json" if args.quick else "batch_placement.json")
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "note": "wall times on a shared machine; cpu_s is single-process CPU time",
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    main()
