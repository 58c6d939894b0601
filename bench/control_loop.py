"""Control-loop cost and failover latency, with the real store, loop and local backend.

1. Tick cost: one control-loop tick (poll, cancels, snapshot from store + backends, decide, apply) with
   N pending jobs that do not fit (so every tick re-decides all of them), against the baseline of
   decide() alone on the same snapshot, measured in the same run: the ratio is the loop's overhead.
2. Failover: a 2-node job on azure-local; the provider goes down; seconds until the job runs on
   oci-local (loop ticking every 0.1 s), and until it finishes with the same result (the demo).

    .venv/bin/python bench/control_loop.py [--pending 100 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from overcast.backends.local import LocalBackend
from overcast.control.demo import DEMO_CLUSTERS, run_demo
from overcast.control.loop import ControlLoop
from overcast.control.snapshot import build_snapshot
from overcast.scheduler.decide import decide
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import Store

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "control_loop.json"


def tick_cost(pending: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        store = Store(f"sqlite:///{home / 'db.sqlite'}")
        loop = ControlLoop(store, [LocalBackend(c, home=home) for c in DEMO_CLUSTERS], home=home)
        too_big = JobSpec(
            name="wide", run="true", num_nodes=3,
            resources=Resources(accelerators=(AcceleratorRequest(name="H100", count=1),)),
        )  # fmt: skip
        for _ in range(pending):
            store.submit("default", too_big)
        loop.tick()  # first tick: lease, reconcile, the "waiting" reasons
        ticks, decides = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            loop.tick()
            ticks.append(time.perf_counter() - start)
            snapshot = build_snapshot(loop.rt, time.time(), store.pool_health())
            start = time.perf_counter()
            decide(snapshot)
            decides.append(time.perf_counter() - start)
        tick, base = statistics.median(ticks), statistics.median(decides)
        return {"pending": pending, "tick_ms": tick * 1e3, "decide_ms": base * 1e3, "ratio": tick / base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = [tick_cost(n, args.repeat) for n in args.pending]
    print(f"{'pending':>8} {'tick ms':>9} {'decide ms':>10} {'tick/decide':>12}")
    for row in rows:
        print(f"{row['pending']:>8} {row['tick_ms']:>9.1f} {row['decide_ms']:>10.1f} {row['ratio']:>12.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        events: list = []
        result = run_demo(Path(tmp), say=lambda _text: None, on_event=events.append)
    down = next(e.at for e in result.events if e.kind == "chaos")
    seen = next(e.at for e in result.events if e.kind == "provider-down")
    moved = next(e.at for e in result.events if e.kind == "started" and "oci-local" in e.detail)
    done = next(e.at for e in result.events if e.kind == "succeeded")
    failover = {
        "loss_noticed_s": seen - down,
        "running_elsewhere_s": moved - down,
        "finished_s": done - down,
        "same_result": result.same,
        "demo_total_s": result.seconds,
    }
    print(f"failover: provider down -> noticed {failover['loss_noticed_s']:.2f}s, running on oci-local "
          f"{failover['running_elsewhere_s']:.2f}s, finished {failover['finished_s']:.1f}s, "
          f"same result: {result.same}; demo {result.seconds:.1f}s")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": platform.platform(), "python": sys.version.split()[0], "ticks": rows}
    RESULTS.write_text(json.dumps(report | {"failover": failover}, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
