"""The README's main demo: a 2-node training job survives the loss of its provider.

Real processes, the real store (SQLite in a temp OVERCAST_HOME) and the real control loop, driven
in-process (no HTTP): the job starts on azure-local (the cheaper provider); azure-local goes down
mid-run; the job resumes on oci-local from its checkpoint and ends with the same result as an
uninterrupted run, which the demo computes first.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from overcast.backends.local import LocalBackend, LocalCluster
from overcast.control.loop import ControlLoop
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import EventRecord, JobState, Store
from overcast.store.usage import UsageRecord

TRAIN = Path(__file__).resolve().parents[3] / "examples" / "train" / "train.py"
DEMO_CLUSTERS = (
    LocalCluster("azure-local", nodes=2, gpus_per_node=1, price_per_node_hour=2.0),
    LocalCluster("oci-local", nodes=2, gpus_per_node=1, price_per_node_hour=3.0),
)


@dataclass
class DemoResult:
    reference: str
    results: list[str]  # the RESULT line of every node of the last attempt
    job_state: str
    pools: list[str]  # pool of each attempt that ran
    events: list[EventRecord]
    seconds: float
    resumed: str | None  # the last attempt's "resumed from checkpoint at step N" line
    bill: list[UsageRecord]  # GPU-hours and dollars per pool, from the launch records

    @property
    def same(self) -> bool:
        return bool(self.results) and all(line == self.reference for line in self.results)


def train_args(steps: int, step_seconds: float) -> list[str]:
    return ["--steps", str(steps), "--step-seconds", str(step_seconds), "--checkpoint-every", "10"]


def reference_result(scratch: Path, steps: int) -> str:
    args = [sys.executable, str(TRAIN), *train_args(steps, 0.0), "--checkpoint-dir", str(scratch)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    return next(line for line in out.splitlines() if line.startswith("RESULT"))


def run_demo(
    home: Path,
    say: Callable[[str], None] = print,
    on_event: Callable[[EventRecord], None] | None = None,
    steps: int = 200,
    step_seconds: float = 0.03,
    down_at_step: int = 60,
    timeout_s: float = 110.0,
) -> DemoResult:
    start, started_at = time.monotonic(), time.time()
    if not TRAIN.exists():
        raise FileNotFoundError(f"the example trainer is missing: {TRAIN}")
    store = Store(f"sqlite:///{home / 'overcast.db'}")
    backends = [LocalBackend(cluster, home=home) for cluster in DEMO_CLUSTERS]
    loop = ControlLoop(store, backends, home=home, grace_seconds=3.0)
    azure = backends[0]
    say(
        "fleet: "
        + ", ".join(f"{c.name} ({c.nodes} nodes, ${c.price_per_node_hour:.2f}/node-h)" for c in DEMO_CLUSTERS)
    )

    reference = reference_result(home / "reference", steps)
    say(f"reference (uninterrupted run, computed first): {reference}")

    run = " ".join([sys.executable, str(TRAIN), *train_args(steps, step_seconds)])
    spec = JobSpec(
        name="train-demo", run=run, num_nodes=2, max_restarts=3,
        resources=Resources(accelerators=(AcceleratorRequest(name="H100", count=1),)),
    )  # fmt: skip
    job = store.submit("default", spec)
    say(f"submitted {job.id}: 2 nodes x H100:1, checkpoints every 10 of {steps} steps")
    checkpoint = home / "checkpoints" / job.id / "checkpoint.npz"
    try:
        seen = 0
        downed = False
        ran_on: list[str] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            loop.tick()
            for event in store.events(after_id=seen):
                seen = event.id
                if on_event:
                    on_event(event)
            now = store.get(job.id)
            assert now is not None
            if now.state is JobState.RUNNING and (not ran_on or ran_on[-1] != now.pool_id):
                ran_on.append(now.pool_id or "?")
            if now.state.terminal:
                break
            if not downed and now.state is JobState.RUNNING and _checkpoint_step(checkpoint) >= down_at_step:
                step = _checkpoint_step(checkpoint)
                say(f"chaos: azure-local goes down (the job has a checkpoint at step {step})")
                azure.set_down(True)
                store.add_event(None, "chaos", "azure-local down")
                downed = True
            time.sleep(0.1)
        else:
            raise TimeoutError(f"the demo job did not finish within {timeout_s:.0f}s")
    finally:  # a timeout or Ctrl-C must not leave trainers running in the background
        for backend in backends:
            for job_id, attempt in backend.active():
                backend.stop(job_id, attempt, 1.0)

    final = store.get(job.id)
    assert final is not None
    events = store.events(limit=100_000)
    logs = sorted((home / "logs" / job.id / str(final.attempt)).glob("node-*.log"))
    lines = [line for log in logs for line in log.read_text().splitlines()]
    results = [line for line in lines if line.startswith("RESULT")]
    resumed = next((line for line in lines if line.startswith("resumed from")), None)
    seconds = time.monotonic() - start
    bill = store.usage(started_at - 1.0, time.time() + 1.0, by="pool").rows
    return DemoResult(reference, results, final.state.value, ran_on, events, seconds, resumed, bill)


def _checkpoint_step(path: Path) -> int:
    if not path.exists():
        return -1
    import numpy as np

    try:
        with np.load(path) as data:
            return int(data["step"])
    except (OSError, ValueError, KeyError):  # being replaced right now: ask again next tick
        return -1
