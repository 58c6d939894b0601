"""Catalog load time: the shipped compact catalog vs. normalising the raw provider CSVs again.

Each cold measurement is a fresh Python process (imports included, as a CLI command sees it), repeated
and reported as the median of wall and CPU time (CPU too because a shared machine's wall time includes
waiting for a core). The baseline (rebuilding from the raw CSVs, skipped when they are absent) runs in
the same invocation, so the ratio is what counts.

    .venv/bin/python bench/catalog_load.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "catalog_load.json"
BASELINE = "baseline: rebuild from raw CSVs"

# the measured step of each fresh process; the harness wraps it in wall and CPU timers
STEPS = {
    "import overcast.catalog.load": "import overcast.catalog.load",
    "load_offers() cold (import + read)": "from overcast.catalog.load import load_offers; load_offers()",
    "load_offers() + build_pools() cold": (
        "from overcast.catalog.load import load_offers; from overcast.catalog.pools import build_pools; "
        "build_pools(load_offers(), now=0)"
    ),
    BASELINE: (
        "from overcast.catalog.build import build; from overcast.catalog.sources import DEFAULT_SOURCE_DIR; "
        "build(DEFAULT_SOURCE_DIR)"
    ),
}
TIMED = "import time; t, c = time.perf_counter(), time.process_time()\n{step}\n"
TIMED += "print(time.perf_counter() - t, time.process_time() - c)"


def cold(step: str, repeat: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``step`` over ``repeat`` fresh processes."""
    walls, cpus = [], []
    for _ in range(repeat):
        code = TIMED.format(step=step)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        wall, cpu = map(float, out.stdout.split())
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus)


def warm(repeat: int) -> tuple[float, float]:
    from overcast.catalog.load import load_offers

    load_offers()
    walls, cpus = [], []
    for _ in range(repeat * 100):
        t, c = time.perf_counter(), time.process_time()
        load_offers()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    from overcast.catalog.load import load_offers
    from overcast.catalog.sources import DEFAULT_SOURCE_DIR

    rows: dict[str, tuple[float, float]] = {}
    for name, step in STEPS.items():
        if name == BASELINE and not DEFAULT_SOURCE_DIR.exists():
            continue
        rows[name] = cold(step, 3 if name == BASELINE else args.repeat)
    rows["load_offers() warm (cached copy)"] = warm(args.repeat)

    base = rows.get(BASELINE)
    print(f"catalog: {len(load_offers())} offers; median of {args.repeat} fresh processes")
    print(f"{'step':40} {'wall ms':>9} {'CPU ms':>9} {'CPU vs rebuild':>15}")
    for name, (wall, cpu) in rows.items():
        ratio = f"{cpu / base[1]:.4f}x" if base else "-"
        print(f"{name:40} {wall * 1000:9.2f} {cpu * 1000:9.2f} {ratio:>15}")
    record = {
        "offers": len(load_offers()),
        "repeat": args.repeat,
        "python": sys.version.split()[0],
        "wall_ms": {k: round(v[0] * 1000, 3) for k, v in rows.items()},
        "cpu_ms": {k: round(v[1] * 1000, 3) for k, v in rows.items()},
        "cpu_ratio_vs_rebuild": {k: round(v[1] / base[1], 5) for k, v in rows.items()} if base else None,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
