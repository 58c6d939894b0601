"""The Lambda backend against a local fake of Lambda Cloud's REST API v1 (tests/fixtures/lambda_fake.py),
through the backend's own httpx client (Lambda has no official SDK).

The fake has no machines: ``LambdaVmHost`` (tests/backends/lambda_vm.py) plays the hypervisor and runs
each active instance's user-data as local processes, so the node agent and the job really run.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overcast.backends.base import CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.backends.lambda_client import LambdaError, LambdaSettings, error_for
from overcast.backends.lambda_cloud import NO_AGENT, LambdaBackend
from overcast.catalog.pools import pool_id
from overcast.placement.pool import Pool, Purchase
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import JobState, Store
from tests.backends.cloud_checks import eventually, fast_loop, run_fleet_job, wait_events
from tests.backends.lambda_vm import LambdaVmHost
from tests.control.harness import reference_result, run_until, state, train_command
from tests.fixtures.lambda_fake import KEY, REGION, FakeLambda, lambda_fake, lambda_server  # noqa: F401

H100 = "gpu_8x_h100_sxm5"
A10 = "gpu_1x_a10"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "controller" / "lambda-key"
    path.parent.mkdir()
    path.write_text(KEY + "\n")
    return path


def settings(fake: FakeLambda, key_file: Path, **kw: object) -> LambdaSettings:
    base: dict = dict(name="tx", region=REGION, instance_types=(H100, A10), ssh_key_name="overcast",
                      max_nodes=4, endpoint=fake.endpoint, api_key_file=str(key_file),
                      key_path=str(key_file.parent.parent / "node" / "lambda-api-key"),
                      launch_interval_seconds=0.0, agent_poll_seconds=0.2,
                      agent_linger_seconds=30.0)  # fmt: skip
    return LambdaSettings(**(base | kw))


def gpu_job(name: str, run: str, nodes: int = 2) -> JobSpec:
    resources = Resources(accelerators=(AcceleratorRequest(name="H100", count=8),))
    return JobSpec(name=name, run=run, num_nodes=nodes, resources=resources)


def pool_of(backend: LambdaBackend, instance_type: str = H100) -> Pool:
    wanted = pool_id("lambda", REGION, None, instance_type, Purchase.ON_DEMAND)
    return next(p for p in backend.pools() if p.id == wanted)


def poll_until(backend: LambdaBackend, wanted: set, timeout: float = 20.0) -> list:
    return wait_events(backend, lambda events: wanted <= {(e.job_id, e.kind) for e in events}, timeout)


@pytest.fixture
def vms(lambda_fake: FakeLambda, tmp_path: Path) -> Iterator[LambdaVmHost]:  # noqa: F811
    host = LambdaVmHost(lambda_fake, tmp_path / "vms").start()
    try:
        yield host
    finally:
        host.close()


def test_pools_are_the_catalog_offers_on_demand_per_type(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,
    tmp_path: Path,
) -> None:
    backend = LambdaBackend(settings(lambda_fake, key_file), home=tmp_path)
    pools = backend.pools()
    assert sorted(p.id for p in pools) == [
        f"lambda/{REGION}/-/{A10}/on-demand",
        f"lambda/{REGION}/-/{H100}/on-demand",
    ]
    assert all(p.capacity_nodes == 4 and p.used_nodes == 0 and p.backend == "lambda:tx" for p in pools)
    assert pool_of(backend).gpus_per_node == 8 and pool_of(backend).accelerator == "H100"
    with pytest.raises(ValueError, match="no catalog offer for gpu_9x_nope"):
        LambdaBackend(settings(lambda_fake, key_file, instance_types=("gpu_9x_nope",)), home=tmp_path)
    assert lambda_fake.unauthorized == 0


def test_a_gang_is_n_tagged_paced_launches_and_launching_again_launches_nothing(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,
    tmp_path: Path,
) -> None:
    lambda_fake.launch_interval = 0.3  # Lambda rate-limits launch requests
    backend = LambdaBackend(settings(lambda_fake, key_file, launch_interval_seconds=0.35), home=tmp_path)
    env = {"OVERCAST_JOB_ID": "j1", "OVERCAST_ATTEMPT": "1", "OVERCAST_CHECKPOINT_DIR": "/ckpt dir/j1"}
    request = LaunchRequest("j1", 1, pool_of(backend), 3, gpu_job("j", "echo hi", 3), env)
    allocation = backend.launch(request)
    assert lambda_fake.rate_limited == 0  # spaced by launch_interval_seconds
    bodies = lambda_fake.launches
    assert [(b["instance_type_name"], b["region_name"], b["quantity"]) for b in bodies] == [
        (H100, REGION, 1)
    ] * 3
    assert all(b["ssh_key_names"] == ["overcast"] for b in bodies)
    tags = [{t["key"]: t["value"] for t in b["tags"]} for b in bodies]
    assert [t["overcast-rank"] for t in tags] == ["0", "1", "2"]
    assert all(t["overcast-backend"] == "lambda:tx" and t["overcast-job"] == "j1" for t in tags)
    assert len({t["overcast-launch"] for t in tags}) == 3  # each rank's nonce: how its agent finds it
    script = bodies[0]["user_data"]
    assert "export OVERCAST_CHECKPOINT_DIR='/ckpt dir/j1'" in script and "echo hi" in script
    assert "-m overcast.backends.lambda_agent" in script
    # the key is in the user-data once, inside the here-document that writes the root-only file
    assert script.count(KEY) == 1 and f"\n{KEY}\nOVERCAST_LAMBDA_KEY_EOF\n" in script
    assert "umask 077" in script and "export LAMBDA_API_KEY" not in script
    assert sorted(allocation.handle.split(",")) == sorted(lambda_fake.instances)
    # the same attempt again (a replayed apply) launches nothing new
    assert backend.launch(request).handle == allocation.handle and len(lambda_fake.launches) == 3
    # a loop that died in the middle of a launch (after rank 0): the replayed launch starts rank 1 only
    real_launch, calls = backend.api.launch, []

    def dies_after_one(body: dict) -> list[str]:
        if calls:
            raise SystemExit("the loop's process died")  # not an Exception: no rollback ran
        calls.append(1)
        return real_launch(body)

    backend.api.launch = dies_after_one  # type: ignore[method-assign]
    crashed = LaunchRequest("c", 1, pool_of(backend, A10), 2, gpu_job("c", "true"))
    with pytest.raises(SystemExit):
        backend.launch(crashed)
    backend.api.launch = real_launch  # type: ignore[method-assign]
    backend.launch(crashed)
    ranks = [{t["key"]: t["value"] for t in b["tags"]}["overcast-rank"] for b in lambda_fake.launches[-2:]]
    assert ranks == ["0", "1"]
    assert backend.active() == [("c", 1), ("j1", 1)] and pool_of(backend).used_nodes == 3
    # without pacing, Lambda's 429 is waited out (a refused launch launched nothing)
    lambda_fake.launch_interval = 0.3
    eager = LambdaBackend(settings(lambda_fake, key_file, name="eager"), home=tmp_path / "eager")
    eager.launch(LaunchRequest("e", 1, pool_of(eager, A10), 2, gpu_job("e", "true")))
    assert lambda_fake.rate_limited >= 1 and len(eager._gang("e", 1).live) == 2  # type: ignore[union-attr]
    for job in ("j1", "c"):
        backend.stop(job, 1, grace_seconds=0.0)
    eager.stop("e", 1, grace_seconds=0.0)
    assert backend.active() == [] and backend.poll() == []
    assert lambda_fake.unauthorized == 0


def test_capacity_and_quota_errors_roll_the_gang_back_and_outages_are_provider_down(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,
    tmp_path: Path,
) -> None:
    backend = LambdaBackend(settings(lambda_fake, key_file), home=tmp_path)
    pool = pool_of(backend)
    lambda_fake.set_capacity(H100, REGION, 0)  # not in regions_with_capacity_available: nothing launched
    with pytest.raises(CapacityError, match="no gpu_8x_h100_sxm5 capacity"):
        backend.launch(LaunchRequest("none", 1, pool, 1, gpu_job("j", "true", 1)))
    assert lambda_fake.launches == []
    lambda_fake.set_capacity(H100, REGION, 1)  # listed (room for one), but a 2-node gang does not fit
    with pytest.raises(CapacityError, match="insufficient-capacity"):
        backend.launch(LaunchRequest("big", 1, pool, 2, gpu_job("j", "true")))
    # rank 0 launched, rank 1 refused once, and rank 0 was terminated: nothing left behind
    assert len(lambda_fake.launches) == 2
    assert {i.data["status"] for i in lambda_fake.instances.values()} <= {"terminating", "terminated"}
    assert backend.active() == [] and backend.poll() == []
    lambda_fake.quota = 0
    with pytest.raises(CapacityError, match="quota-exceeded"):
        backend.launch(LaunchRequest("quota", 1, pool_of(backend, A10), 1, gpu_job("j", "true", 1)))
    bad_key = tmp_path / "bad-key"
    bad_key.write_text("secret_not_the_key")
    wrong = LambdaBackend(settings(lambda_fake, bad_key), home=tmp_path / "wrong")
    with pytest.raises(ProviderDown, match="invalid-api-key"):
        wrong.launch(LaunchRequest("x", 1, pool, 1, gpu_job("j", "true", 1)))
    down = LambdaBackend(settings(lambda_fake, key_file, endpoint="http://127.0.0.1:9"), home=tmp_path / "d")
    started = time.monotonic()
    with pytest.raises(ProviderDown, match="unreachable"):
        down.launch(LaunchRequest("x", 1, pool, 1, gpu_job("j", "true", 1)))
    assert {p.health.value for p in down.pools()} == {"down"}
    assert time.monotonic() - started < 15
    nokey = LambdaBackend(settings(lambda_fake, key_file, api_key_file=None, api_key_env="NO_SUCH_VAR_X"),
                          home=tmp_path / "n")  # fmt: skip
    with pytest.raises(ProviderDown, match=r"no API key \(from \$NO_SUCH_VAR_X\)"):
        nokey.launch(LaunchRequest("x", 1, pool, 1, gpu_job("j", "true", 1)))

    def err(code: str) -> dict:
        return {"error": {"code": code, "message": "m", "suggestion": "s"}}

    assert isinstance(error_for("x", 429, err("global/too-many-requests")), ProviderDown)
    assert isinstance(error_for("x", 503, {}), ProviderDown)
    bad = error_for("launch", 400, err("global/invalid-parameters"))
    assert isinstance(bad, LambdaError) and "invalid-parameters: m (s)" in str(bad)


def test_a_two_node_gang_runs_to_success_and_the_key_stays_out_of_logs_and_the_job(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,
    vms: LambdaVmHost,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and the backend at their most verbose
    conf = settings(lambda_fake, key_file)
    backend = LambdaBackend(conf, home=tmp_path)
    run = 'echo "rank $OVERCAST_NODE_RANK head $OVERCAST_HEAD_ADDR"; env; ps -ef'
    backend.launch(LaunchRequest("ok", 1, pool_of(backend), 2, gpu_job("ok", run)))
    events = poll_until(backend, {("ok", EventKind.SUCCEEDED)})
    assert [e.kind for e in events] == [EventKind.STARTED, EventKind.SUCCEEDED]
    gang = vms.instances(job="ok")
    assert sorted(i["tagmap"]["overcast-exit"] for i in gang) == ["0", "0"]  # written by the agents
    ended = max(int(i["tagmap"]["overcast-ended-at"]) for i in gang)
    assert events[-1].at == ended  # billed to when the agents said the job ended, not to the poll
    head = next(i for i in gang if i["tagmap"]["overcast-rank"] == "0")["private_ip"]
    consoles = [vms.console(i["id"]) for i in gang]
    assert all(f"head {head}" in text for text in consoles)
    # the poll after the loop's acknowledgement terminates the ended nodes (their agents waited for it)
    wait_events(backend, lambda _: all(i["status"] != "active" for i in vms.instances(job="ok")), 10)
    vms.wait_gone()
    assert backend.active() == []
    mode = stat.S_IMODE(os.stat(conf.key_path).st_mode)
    assert mode == 0o600 and stat.S_IMODE(os.stat(Path(conf.key_path).parent).st_mode) == 0o700
    # never in the job's environment, its process list, the consoles, or the controller's logs
    assert all(KEY not in text for text in consoles)
    assert KEY not in caplog.text and "Bearer" not in caplog.text
    assert KEY not in repr(backend.api) and KEY not in repr(conf)


def test_stop_gives_the_job_sigterm_and_a_node_terminated_under_a_job_is_lost(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,
    vms: LambdaVmHost,
    tmp_path: Path,
) -> None:
    backend = LambdaBackend(settings(lambda_fake, key_file), home=tmp_path)
    saver = "trap 'echo saved; exit 143' TERM; echo ready; while true; do sleep 0.05; done"
    backend.launch(LaunchRequest("s", 1, pool_of(backend), 2, gpu_job("s", saver)))
    backend.launch(LaunchRequest("l", 1, pool_of(backend, A10), 2, gpu_job("l", saver)))
    backend.launch(LaunchRequest("f", 1, pool_of(backend, A10), 1, gpu_job("f", "exit 3", 1)))
    events = poll_until(
        backend, {("s", EventKind.STARTED), ("l", EventKind.STARTED), ("f", EventKind.FAILED)}
    )
    failed = next(e for e in events if e.kind is EventKind.FAILED)
    assert failed.exit_code == 3 and "exited with 3" in failed.detail
    ready = [i["id"] for i in vms.instances(job="s") + vms.instances(job="l")]
    assert eventually(lambda: all("ready" in vms.console(vm) for vm in ready), 10)
    started = time.monotonic()
    backend.stop("s", 1, grace_seconds=15.0)
    assert time.monotonic() - started < 10  # the job saved and the agents ended their instances at once
    gang = vms.instances(job="s")
    assert all(i["tagmap"].get("overcast-exit") == "143" for i in gang)
    assert all(i["tagmap"].get("overcast-sigterm") == "1" for i in gang)
    assert all("saved" in vms.console(i["id"]) for i in gang)
    # rank 1 of "l" terminated outside overcast (a host failure, a console click): the gang is lost
    rank1 = next(i for i in vms.instances(job="l") if i["tagmap"]["overcast-rank"] == "1")
    lambda_fake.terminate(rank1["id"])
    (lost,) = poll_until(backend, {("l", EventKind.PREEMPTED)})
    assert "node lost" in lost.detail and rank1["id"] in lost.detail
    backend.stop("l", 1, grace_seconds=0.0)  # what the loop does with a preempted gang
    backend.stop("f", 1, grace_seconds=0.0)
    assert backend.poll() == [] and backend.active() == []
    vms.wait_gone()


def test_a_gang_whose_agent_never_starts_fails_instead_of_running_forever(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,
    vms: LambdaVmHost,
    tmp_path: Path,
) -> None:
    conf = settings(lambda_fake, key_file, python="no-such-python3", agent_timeout_seconds=1.0)
    backend = LambdaBackend(conf, home=tmp_path)
    backend.launch(LaunchRequest("broken", 1, pool_of(backend, A10), 1, gpu_job("b", "true", 1)))
    events = poll_until(backend, {("broken", EventKind.FAILED)}, timeout=15)
    assert [(e.kind, e.detail) for e in events] == [(EventKind.FAILED, NO_AGENT)]  # never STARTED
    backend.stop("broken", 1, grace_seconds=0.0)
    assert backend.poll() == [] and backend.active() == []


def test_a_lambda_entry_of_the_fleet_file_runs_a_gang_through_the_loop(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,
    vms: LambdaVmHost,
    tmp_path: Path,
) -> None:
    text = f"""\
lambda:
  - name: tx
    region: {REGION}
    endpoint: {lambda_fake.endpoint}
    api_key_file: {key_file}
    key_path: {tmp_path / "node" / "lambda-api-key"}
    instance_types: [{H100}]
    ssh_key_name: overcast
    max_nodes: 2
"""
    job = gpu_job("hello", "echo hello from $OVERCAST_NODE_RANK of $OVERCAST_NUM_NODES", 2)
    job_id = run_fleet_job(text, "lambda:tx", tmp_path, job, lambda s: s is not JobState.PENDING)
    gang = vms.instances(job=job_id)
    assert sorted(i["tagmap"]["overcast-exit"] for i in gang) == ["0", "0"]
    assert sorted("hello from" in vms.console(i["id"]) for i in gang) == [True, True]
    assert all(KEY not in vms.console(i["id"]) for i in gang)


def test_loop_fails_over_on_capacity_resumes_after_a_lost_node_and_reconciles_after_restart(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,
    vms: LambdaVmHost,
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    conf = settings(lambda_fake, key_file)
    loop = fast_loop(tmp_path, store, LambdaBackend(conf, home=tmp_path))
    lambda_fake.set_capacity(A10, REGION, 1)  # listed with room for one: a 2-node gang does not fit there
    either = (AcceleratorRequest(name="A10", count=1), AcceleratorRequest(name="H100", count=8))  # any of
    resources = Resources(accelerators=either, ordered=False)
    spec = JobSpec(
        name="train", run=train_command(steps=150, step_seconds=0.03), num_nodes=2, resources=resources
    )
    record = store.submit("default", spec)
    ckpt = tmp_path / "checkpoints" / record.id / "checkpoint.npz"
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING and ckpt.exists())
    first = state(store, record.id)
    refused = pool_id("lambda", REGION, None, A10, Purchase.ON_DEMAND)
    assert first.pool_id == pool_id("lambda", REGION, None, H100, Purchase.ON_DEMAND)
    assert store.pool_health()[refused].health == "out-of-capacity"
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("capacity-error") < kinds.index("started")
    rolled_back = vms.instances(job=record.id, attempt=str(first.attempt - 1))
    assert len(rolled_back) == 1 and rolled_back[0]["status"] in ("terminating", "terminated")

    # The loop dies; a new loop with a new backend (same store and home) finds the gang running.
    loop = fast_loop(tmp_path, store, LambdaBackend(conf, home=tmp_path))
    run_until(loop, lambda: loop.leader)
    after = state(store, record.id)
    assert (after.state, after.attempt) == (JobState.RUNNING, first.attempt)
    assert "requeued" not in [e.kind for e in store.events(job_id=record.id)]

    # A lost node: rank 1 is terminated outside overcast (a host failure, a console click).
    gang = vms.instances(job=record.id, attempt=str(first.attempt))
    lambda_fake.terminate(next(i["id"] for i in gang if i["tagmap"]["overcast-rank"] == "1"))
    run_until(loop, lambda: state(store, record.id).state.terminal, timeout=40)
    final = state(store, record.id)
    assert (final.state, final.restarts, final.attempt) == (JobState.SUCCEEDED, 1, first.attempt + 1)
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("preempted") < kinds.index("requeued") < kinds.index("succeeded")
    consoles = [vms.console(i["id"]) for i in vms.instances(job=record.id, attempt=str(final.attempt))]
    results = [line for text in consoles for line in text.splitlines() if line.startswith("RESULT")]
    assert results == [reference_result(tmp_path / "ref", steps=150)] * 2
    resumed = [re.search(r"resumed from checkpoint at step (\d+)", text) for text in consoles]
    assert all(m and 0 < int(m[1]) < 150 for m in resumed), resumed  # from mid-run, not from the end
    backend = loop.backends["lambda:tx"]
    assert eventually(lambda: backend.poll() == [] and backend.active() == [], 10)
    vms.wait_gone()
