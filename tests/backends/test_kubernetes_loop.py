"""The real control loop over the Kubernetes backend (fake apiserver, real pods as local processes) and a
local backend as the other provider: success, failover on a gang that does not fit, a lost node resumed
from the checkpoint elsewhere, reconcile after a restart of the loop, cancel."""

from __future__ import annotations

import time

from overcast.backends.local import LocalBackend, LocalCluster
from overcast.catalog.fleet import parse_fleet
from overcast.control.health import Backoff
from overcast.control.loop import ControlLoop
from overcast.control.setup import backends_from_fleet
from overcast.store import JobState, Store
from tests.backends.k8s_cluster import K8s, gpu_spec, k8s, wait_until  # noqa: F401
from tests.control.harness import reference_result, result_lines, run_until, state, train_command

FLEET = """
clusters:
  - name: lab
    kubernetes: {{api: "{url}", namespace: default, schedule_timeout_s: {timeout}}}
    nodes: 2
    gpus_per_node: 8
    accelerator: H100
    price_per_node_hour: 4.0
"""


def loop_over(
    cluster: K8s, store: Store, *, local: bool = True, timeout: float = 5.0, ttl: float = 15.0
) -> ControlLoop:
    """The fleet file's Kubernetes backend (cheaper), plus a local cluster of the same shape."""
    fleet = parse_fleet(FLEET.format(url=cluster.url, timeout=timeout))
    backends = backends_from_fleet(fleet, cluster.home)
    if local:
        elsewhere = LocalCluster("elsewhere", nodes=2, gpus_per_node=8, price_per_node_hour=20.0)
        backends.append(LocalBackend(elsewhere, home=cluster.home))
    backoff = Backoff(base_seconds=60.0, cap_seconds=600.0)
    return ControlLoop(store, backends, home=cluster.home, grace_seconds=2.0, backoff=backoff, lease_ttl=ttl)


def test_a_job_from_a_fleet_file_runs_as_pods_and_succeeds(k8s: K8s) -> None:  # noqa: F811
    store = Store(f"sqlite:///{k8s.home / 'db.sqlite'}")
    loop = loop_over(k8s, store, local=False)
    record = store.submit("default", gpu_spec("train", train_command(steps=30, step_seconds=0.01)))
    run_until(loop, lambda: state(store, record.id).state.terminal)
    final = state(store, record.id)
    assert (final.state, final.pool_id, final.attempt) == (JobState.SUCCEEDED, "kubernetes/lab", 1)
    results = result_lines(k8s.home, record.id)  # both ranks' pod logs, copied before the Job went
    assert results == [reference_result(k8s.home / "ref", steps=30)] * 2
    wait_until(lambda: loop.tick() and not k8s.objects("jobs"), what="the ended Job deleted")


def test_a_gang_that_does_not_fit_fails_over_to_the_other_backend(k8s: K8s) -> None:  # noqa: F811
    k8s.foreign_pod("team-b", gpus=8, node="node-b")  # another team holds a node overcast cannot see
    store = Store(f"sqlite:///{k8s.home / 'db.sqlite'}")
    loop = loop_over(k8s, store, timeout=1.0)
    record = store.submit("default", gpu_spec("gang", "sleep 2"))  # rank 0 holds node-a meanwhile
    run_until(loop, lambda: state(store, record.id).state.terminal)
    final = state(store, record.id)
    assert (final.state, final.pool_id, final.attempt) == (JobState.SUCCEEDED, "local/elsewhere", 2)
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert "capacity-error" in kinds and "started" in kinds
    assert "Insufficient nvidia.com/gpu" in " ".join(e.detail for e in store.events(job_id=record.id))
    cooled = store.pool_health()["kubernetes/lab"]  # the next gang does not wait out the timeout too
    assert cooled.health == "out-of-capacity" and cooled.until is not None and cooled.until > time.time()
    assert not k8s.objects("jobs") and not k8s.objects("pods")  # nothing of the gang left behind


def test_a_lost_node_is_a_preemption_and_the_job_resumes_elsewhere_from_its_checkpoint(
    k8s: K8s,  # noqa: F811
) -> None:
    store = Store(f"sqlite:///{k8s.home / 'db.sqlite'}")
    loop = loop_over(k8s, store)
    # storage both providers reach (a bucket URL in real life): the pods cannot see the server's disk
    shared = k8s.home / "shared-checkpoints"
    train = train_command(steps=100, step_seconds=0.02)
    record = store.submit("default", gpu_spec("train", train, checkpoint_dir=str(shared)))
    ckpt = shared / "checkpoint.npz"
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING and ckpt.exists())
    assert state(store, record.id).pool_id == "kubernetes/lab"
    k8s.cluster.lose_node("node-b")
    run_until(loop, lambda: state(store, record.id).state.terminal)
    final = state(store, record.id)
    assert (final.state, final.pool_id, final.attempt, final.restarts) == (
        JobState.SUCCEEDED, "local/elsewhere", 2, 1,
    )  # fmt: skip
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("preempted") < kinds.index("requeued") < kinds.index("succeeded")
    log = (k8s.home / "logs" / record.id / "2" / "node-0.log").read_text()
    assert "resumed from checkpoint at step" in log
    assert reference_result(k8s.home / "ref", steps=100) in log


def test_a_restarted_loop_finds_the_running_job_and_neither_loses_nor_doubles_it(
    k8s: K8s,  # noqa: F811
) -> None:
    store = Store(f"sqlite:///{k8s.home / 'db.sqlite'}")
    first = loop_over(k8s, store, local=False, ttl=0.5)
    record = store.submit("default", gpu_spec("long", "sleep 1.5; echo RESULT finished"))
    run_until(first, lambda: state(store, record.id).state is JobState.RUNNING)
    del first  # the loop's process dies: no release of its lease, nothing in memory survives
    second = loop_over(k8s, store, local=False, ttl=0.5)  # new backends too
    run_until(second, lambda: state(store, record.id).state.terminal)
    final = state(store, record.id)
    assert second.ticks > 0 and (final.state, final.attempt, final.restarts) == (JobState.SUCCEEDED, 1, 0)
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert "requeued" not in kinds and "orphan-stopped" not in kinds
    assert result_lines(k8s.home, record.id) == ["RESULT finished"] * 2


def test_cancel_stops_the_pods_with_sigterm_and_deletes_the_job(k8s: K8s) -> None:  # noqa: F811
    store = Store(f"sqlite:///{k8s.home / 'db.sqlite'}")
    loop = loop_over(k8s, store, local=False)
    saver = "trap 'echo saved; exit 143' TERM; echo ready; while true; do sleep 0.05; done"
    record = store.submit("default", gpu_spec("cancel-me", saver))
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING)
    logs = k8s.cluster.root / "logs"  # RUNNING: the pods run, not that the job has set its trap yet
    wait_until(lambda: sum("ready" in f.read_text() for f in logs.iterdir()) == 2, what="the traps set")
    store.request_cancel(record.id)
    run_until(loop, lambda: state(store, record.id).state is JobState.CANCELLED)
    wait_until(lambda: not k8s.objects("jobs") and not k8s.objects("pods"), what="Job and pods deleted")
    logs = list((k8s.cluster.root / "logs").iterdir())
    assert len(logs) == 2 and all("saved" in f.read_text() for f in logs)  # each rank got SIGTERM
