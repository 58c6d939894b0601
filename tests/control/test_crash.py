"""Crash safety: the control loop is killed with SIGKILL at random points while jobs launch and run,
and restarted. Every job must end exactly once: none lost, none running twice."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

from overcast.backends.local import LocalBackend
from overcast.backends.local_procs import alive
from overcast.store import JobState, Store
from tests.control.harness import clusters, job
from tests.control.loop_process import start_loop, stop_loop
from tests.control.markers import completions, marker_run, overlapping_attempts

ROUNDS = 22


def test_sigkill_at_random_points_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(7)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(url)
    shared = tmp_path / "marks.txt"
    log = tmp_path / "loops.log"
    ids = []
    for round_ in range(ROUNDS):
        for _ in range(rng.choice((0, 1, 1, 2))):  # jobs keep arriving between crashes
            nodes = rng.choice((1, 1, 2))
            spec = job(
                f"j{len(ids)}", marker_run(shared, rng.uniform(0.2, 1.2)), nodes=nodes, max_restarts=50
            )
            ids.append(store.submit("default", spec).id)
        proc = start_loop(url, tmp_path, log)
        time.sleep(rng.uniform(0.6, 2.0))  # start-up is ~0.5 s: kills land before, during and after ticks
        stop_loop(proc, signal.SIGKILL)
        assert not overlapping_attempts(shared), f"round {round_}: {overlapping_attempts(shared)}"

    proc = start_loop(url, tmp_path, log)  # the last one may finish the work
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if all(store.get(i).state.terminal for i in ids):
                break
            time.sleep(0.2)
    finally:
        seen = what_the_loop_sees(store, tmp_path)  # explains a stuck job, should there be one
        stop_loop(proc, signal.SIGTERM)
    states = {i: store.get(i).state for i in ids}
    stuck = {
        i: (s, store.get(i).reason, [(e.kind, e.detail) for e in store.events(job_id=i)])
        for i, s in states.items()
        if s is not JobState.SUCCEEDED
    }
    assert not stuck, (stuck, seen, log.read_text()[-3000:])
    assert overlapping_attempts(shared) == []
    assert completions(shared) == dict.fromkeys(ids, 1)  # the work of every job completed exactly once
    for i in ids:
        kinds = [e.kind for e in store.events(job_id=i)]
        assert kinds.count("succeeded") == 1, (i, kinds)
    assert not [launch for launch in store.launches(active_only=True)]
    assert live_node_processes(tmp_path) == []


def what_the_loop_sees(store: Store, home: Path) -> dict[str, object]:
    """The lease, learned pool health and what the backends run: the inputs of the loop's next tick."""
    backends = [LocalBackend(c, home=home) for c in clusters()]
    return {
        "lease": store.lease_holder("control-loop"),
        "health": store.pool_health(),
        "backends": {b.name: (b.active(), b.pools()[0].used_nodes) for b in backends},
    }


def live_node_processes(home: Path) -> list[int]:
    """Node processes of any launch under ``home`` that still run."""
    pids = [json.loads(f.read_text()) for f in home.glob("local/*/launches/*/node-*.pid")]
    return [p["pid"] for p in pids if alive(p["pid"], p["start"])]
