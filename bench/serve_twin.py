"""Serving twin: cost vs availability of all on-demand, spot only and overcast's SpotHedge-style policy.

Replays the MAF request-rate trace on real GCP A100 spot availability (6 zones, 32 h; spothedge-traces) with
catalog prices. Needs the data directory (not shipped: the traces carry no license).

    .venv/bin/python bench/serve_twin.py [--data /work/shared/data] [--min-replicas 2 4 8]
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

from overcast.serve.simulate import compare, load_scenario

ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    for cand in (os.environ.get("OVERCAST_DATA_DIR"), ROOT.parent / "shared" / "data", "/work/shared/data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    raise SystemExit("no data directory: set OVERCAST_DATA_DIR to the shared datasets")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--peak-replicas", type=int, default=16)
    ap.add_argument("--min-replicas", type=int, nargs="+", default=[2, 4, 8])
    args = ap.parse_args()
    base = load_scenario(args.data or default_data_dir(), peak_replicas=args.peak_replicas)
    rows = []
    print(
        f"{'min':>3} {'policy':<10} {'cost $':>8} {'vs OD':>6} {'served %':>9} "
        f"{'at target %':>11} {'preempt':>7}"
    )
    for mr in args.min_replicas:
        sc = replace(base, min_replicas=mr, max_replicas=max(mr, args.peak_replicas + 8))
        results = compare(sc)
        od_cost = results[0].cost
        for r in results:
            row = {
                "min_replicas": mr,
                "policy": r.policy,
                "cost": round(r.cost, 2),
                "cost_vs_on_demand": round(r.cost / od_cost, 3),
                "requests_served_pct": round(100 * r.availability, 3),
                "time_at_target_pct": round(100 * r.at_target, 2),
                "preemptions": r.preemptions,
                "replica_hours": {k: round(v, 1) for k, v in r.replica_hours.items()},
            }
            rows.append(row)
            print(
                f"{mr:>3} {r.policy:<10} {r.cost:>8.0f} {r.cost / od_cost:>6.2f} "
                f"{100 * r.availability:>9.3f} "
                f"{100 * r.at_target:>11.2f} {r.preemptions:>7}"
            )
    hours = len(base.rps[: min(len(v) for v in base.zones.values())]) * base.tick_seconds / 3600
    meta = {"hours": hours, "zones": sorted(base.zones), "tick_seconds": base.tick_seconds}
    out = ROOT / "bench" / "results" / "serve_twin.json"
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"{hours:.1f} simulated hours over {len(base.zones)} zones; wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
