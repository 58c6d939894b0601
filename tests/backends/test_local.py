"""The local backend with real processes: launch, events, stop, faults, and a restart after a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from overcast.backends import local_runner
from overcast.backends.base import BackendEvent, CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.backends.local import LocalBackend, LocalCluster, visible_devices
from overcast.spec.models import JobSpec


def request(backend: LocalBackend, job: str, run: str, nodes: int = 1, attempt: int = 1) -> LaunchRequest:
    spec = JobSpec(name=job, run=run, num_nodes=nodes)
    env = {"OVERCAST_JOB_ID": job, "OVERCAST_ATTEMPT": str(attempt)}
    return LaunchRequest(job, attempt, backend.pools()[0], nodes, spec, env)


def wait_events(backend: LocalBackend, want: int = 1, timeout: float = 10.0) -> list[BackendEvent]:
    """Poll until ``want`` non-STARTED events arrived (bounded)."""
    found: list[BackendEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found += [e for e in backend.poll() if e.kind is not EventKind.STARTED]
        if len(found) >= want:
            return found
        time.sleep(0.05)
    raise AssertionError(f"only {found} after {timeout}s")


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(LocalCluster("azure-local", nodes=3, gpus_per_node=2), home=tmp_path)


def test_two_node_job_gets_the_contract_and_succeeds(
    backend: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("overcast.backends.local.real_gpu_count", lambda: 0)  # fake slot ids, GPU or not
    run = 'echo "rank=$OVERCAST_NODE_RANK of $OVERCAST_NUM_NODES head=$OVERCAST_HEAD_ADDR"'
    run += ' "gpus=$CUDA_VISIBLE_DEVICES"'
    alloc = backend.launch(request(backend, "j-a", run, nodes=2))
    assert alloc.backend == "local:azure-local"
    events = wait_events(backend)
    assert [(e.kind, e.job_id, e.attempt) for e in events] == [(EventKind.SUCCEEDED, "j-a", 1)]
    logs = [(tmp_path / "logs" / "j-a" / "1" / f"node-{r}.log").read_text() for r in (0, 1)]
    assert logs[0].strip() == "rank=0 of 2 head=127.0.0.1 gpus=0,1"
    assert logs[1].strip() == "rank=1 of 2 head=127.0.0.1 gpus=2,3"
    assert backend.poll() == [] and backend.active() == []


def test_nonzero_exit_is_failed_with_its_code(backend: LocalBackend) -> None:
    backend.launch(request(backend, "j-f", "exit 3"))
    (event,) = wait_events(backend)
    assert event.kind is EventKind.FAILED and event.exit_code == 3


def test_slots_are_counted_and_exhaustion_is_a_capacity_error(backend: LocalBackend) -> None:
    backend.launch(request(backend, "j-1", "sleep 30", nodes=2))
    assert backend.pools()[0].used_nodes == 2
    with pytest.raises(CapacityError, match="1 free nodes, 2 requested"):
        backend.launch(request(backend, "j-2", "sleep 30", nodes=2))
    backend.stop("j-1", 1, grace_seconds=1.0)
    assert backend.active() == [] and backend.pools()[0].used_nodes == 0
    assert [e for e in backend.poll() if e.kind is not EventKind.STARTED] == []  # a stop is not an event


def test_stop_sends_sigterm_and_waits_for_the_save(backend: LocalBackend, tmp_path: Path) -> None:
    marker = tmp_path / "saved"
    run = f"trap 'echo saved > {marker}; exit 143' TERM; echo ready; while true; do sleep 0.05; done"
    backend.launch(request(backend, "j-t", run))
    log = tmp_path / "logs" / "j-t" / "1" / "node-0.log"
    deadline = time.monotonic() + 10
    while "ready" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.02)  # the trap is set once "ready" is printed
    backend.stop("j-t", 1, grace_seconds=5.0)
    assert marker.read_text().strip() == "saved"
    assert backend.active() == []


def test_injected_faults(backend: LocalBackend) -> None:
    backend.launch(request(backend, "j-d", "sleep 30"))
    backend.set_capacity_error(True)
    with pytest.raises(CapacityError):
        backend.launch(request(backend, "j-c", "true"))
    backend.set_capacity_error(False)
    assert backend.set_down(True) == [("j-d", 1)]
    (event,) = wait_events(backend)
    assert event.kind is EventKind.PROVIDER_DOWN and backend.pools()[0].health == "down"
    with pytest.raises(ProviderDown):
        backend.launch(request(backend, "j-e", "true"))
    backend.set_down(False)
    assert backend.pools()[0].health == "ok"


def test_preempting_one_node_preempts_the_job(backend: LocalBackend) -> None:
    backend.launch(request(backend, "j-p", "sleep 30", nodes=2))
    assert backend.preempt("j-p", rank=1, notice_seconds=0.5) == 1
    (event,) = wait_events(backend)
    assert event.kind is EventKind.PREEMPTED and "node 1" in event.detail
    backend.stop("j-p", 1, grace_seconds=0.5)  # the loop stops the rest of the gang
    assert backend.active() == []
    with pytest.raises(KeyError):
        backend.preempt("j-p")


def test_a_new_instance_finds_processes_and_unacknowledged_events(tmp_path: Path) -> None:
    cluster = LocalCluster("oci-local", nodes=2)
    first = LocalBackend(cluster, home=tmp_path)
    first.launch(request(first, "j-r", "sleep 0.5"))
    first.launch(request(first, "j-q", "sleep 30"))
    del first  # the control loop crashed
    second = LocalBackend(cluster, home=tmp_path)
    assert sorted(second.active()) == [("j-q", 1), ("j-r", 1)]
    (event,) = wait_events(second)
    assert (event.kind, event.job_id) == (EventKind.SUCCEEDED, "j-r")
    third = LocalBackend(cluster, home=tmp_path)  # crashed again before handling the event: it comes back
    assert [(e.kind, e.job_id) for e in wait_events(third)] == [(EventKind.SUCCEEDED, "j-r")]
    third.poll()
    assert [e for e in third.poll() if e.kind is not EventKind.STARTED] == []  # acknowledged now
    third.stop("j-q", 1, grace_seconds=0.5)
    assert third.active() == []


def test_setup_runs_before_run_and_its_failure_fails_the_node(backend: LocalBackend, tmp_path: Path) -> None:
    spec = JobSpec(name="s", setup="echo ready > prepared.txt", run="cat prepared.txt", workdir=str(tmp_path))
    backend.launch(LaunchRequest("j-s", 1, backend.pools()[0], 1, spec, {"OVERCAST_JOB_ID": "j-s"}))
    assert wait_events(backend)[0].kind is EventKind.SUCCEEDED
    assert (tmp_path / "logs" / "j-s" / "1" / "node-0.log").read_text().strip() == "ready"
    broken = JobSpec(name="b", setup="false\necho not reached", run="echo nor this")
    backend.launch(LaunchRequest("j-b", 1, backend.pools()[0], 1, broken, {}))
    (event,) = wait_events(backend)
    assert event.kind is EventKind.FAILED and event.exit_code == 1
    assert (tmp_path / "logs" / "j-b" / "1" / "node-0.log").read_text() == ""


def test_slots_map_onto_real_gpus_round_robin() -> None:
    assert visible_devices(1, 2, real_gpus=0) == "2,3"  # no GPU here: fake slot ids
    assert visible_devices(1, 2, real_gpus=8) == "2,3"
    assert visible_devices(1, 4, real_gpus=2) == "0,1,0,1"
    assert visible_devices(0, 0, real_gpus=2) == ""  # CPU-only node


def test_a_node_that_starts_after_its_launch_was_stopped_does_not_run(tmp_path: Path) -> None:
    # A stop finds no pid to signal for a node whose runner is still starting; the runner checks.
    (tmp_path / "stopped").touch()
    ran = tmp_path / "ran"
    runner = [sys.executable, local_runner.__file__, str(tmp_path / "node-0"), "--", "touch", str(ran)]
    subprocess.run(runner, check=True, timeout=30)
    assert not ran.exists()
    ended = json.loads((tmp_path / "node-0.exit").read_text())
    assert ended == {"code": 143, "sigterm": True, "ended_at": pytest.approx(time.time(), abs=30)}


def test_a_job_inherits_only_what_programs_need_never_credentials(
    backend: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERCAST_TOKEN", "oc_secret")
    monkeypatch.setenv("OVERCAST_DATABASE_URL", "postgresql+psycopg://u:pw@db/x")
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))  # where the admin token lives
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("PGPASSWORD", "pg-secret")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    names = ["OVERCAST_TOKEN", "OVERCAST_DATABASE_URL", "OVERCAST_HOME", "AWS_SECRET_ACCESS_KEY"]
    names.append("PGPASSWORD")
    shown = "".join(f"[${name}]" for name in [*names, "LC_ALL", "HOME"])
    backend.launch(request(backend, "j-env", f'echo "{shown}"'))
    wait_events(backend)
    printed = (tmp_path / "logs" / "j-env" / "1" / "node-0.log").read_text().strip()
    assert printed == "[]" * len(names) + f"[C.UTF-8][{os.environ['HOME']}]"


TRAP_TERM = "trap 'exit 143' TERM; while true; do sleep 0.05; done"  # saves and exits on SIGTERM
IGNORE_TERM = "trap '' TERM; while true; do sleep 0.05; done"  # needs SIGKILL


def _exit_time(backend: LocalBackend, job: str, rank: int) -> float:
    return json.loads(next(backend.launches_dir.glob(f"{job}--1/node-{rank}.exit")).read_text())["ended_at"]


@pytest.mark.parametrize(
    ("run", "nodes", "end", "kind"),
    [
        ("sleep 0.$((2 + 4 * OVERCAST_NODE_RANK))", 2, None, EventKind.SUCCEEDED),  # ends at 0.2 s and 0.6 s
        ("sleep 0.2; exit 3", 1, None, EventKind.FAILED),
        (TRAP_TERM, 1, "preempt", EventKind.PREEMPTED),  # SIGTERM, saved within the notice
        (IGNORE_TERM, 1, "kill", EventKind.PREEMPTED),  # SIGKILL after the notice: no exit file
        ("sleep 30", 1, "down", EventKind.PROVIDER_DOWN),
    ],
)
def test_an_end_carries_when_the_nodes_ended_not_when_it_was_polled(
    backend: LocalBackend, run: str, nodes: int, end: str | None, kind: EventKind
) -> None:
    launched = time.time()
    backend.launch(request(backend, "j-e", run, nodes=nodes))
    time.sleep(0.3)  # the trap is set
    before = time.time()
    if end == "down":
        backend.set_down(True)
    elif end:
        backend.preempt("j-e", notice_seconds=5.0 if end == "preempt" else 0.3)
    after = time.time()
    time.sleep(2.5)  # nobody polls (the control loop is away)
    (event,) = wait_events(backend)
    polled = time.time()
    assert event.kind is kind
    assert polled - event.at > 2.0
    if end is None:  # the runner's own stamp, of the last node of the gang
        assert event.at == max(_exit_time(backend, "j-e", rank) for rank in range(nodes))
        assert event.at - launched > 0.2 + 0.4 * (nodes - 1)
    else:
        assert before <= event.at <= after
