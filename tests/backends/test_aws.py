"""The AWS backend against a real EC2 API (moto on loopback) through the official SDK (boto3).

moto has no machines: ``VmEmulator`` (tests/backends/aws_vm.py) plays the hypervisor and runs each
running instance's user-data as local processes, so the node agent and the job really run.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from overcast.backends.aws import NO_AGENT, AwsBackend
from overcast.backends.aws_client import AwsError, AwsSettings, translate
from overcast.backends.base import CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.catalog.pools import pool_id
from overcast.placement.pool import Pool, Purchase
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources, SpotPolicy
from overcast.store import JobState, Store
from tests.backends.aws_vm import VmEmulator
from tests.backends.cloud_checks import eventually, fast_loop, run_fleet_job, wait_events
from tests.control.harness import reference_result, run_until, state, train_command
from tests.fixtures.moto import REGION, MotoEC2, moto_ec2, moto_server  # noqa: F401 (fixtures)

P5 = "p5.48xlarge"


def settings(moto: MotoEC2, **kw: object) -> AwsSettings:
    base: dict = dict(name="use1", region=REGION, instance_types=(P5,), image_id=moto.image_id(),
                      max_nodes=4, endpoint_url=moto.endpoint_url, agent_poll_seconds=0.2)  # fmt: skip
    return AwsSettings(**(base | kw))


def gpu_job(name: str, run: str, nodes: int = 2, spot: SpotPolicy = SpotPolicy.NEVER) -> JobSpec:
    resources = Resources(accelerators=(AcceleratorRequest(name="H100", count=8),), spot=spot)
    return JobSpec(name=name, run=run, num_nodes=nodes, resources=resources)


def pool_of(backend: AwsBackend, zone: str, purchase: Purchase) -> Pool:
    wanted = pool_id("aws", REGION, zone, P5, purchase)
    return next(p for p in backend.pools() if p.id == wanted)


@pytest.fixture
def vms(moto_ec2: MotoEC2, tmp_path: Path) -> Iterator[VmEmulator]:  # noqa: F811
    emulator = VmEmulator(moto_ec2, tmp_path / "vms").start()
    try:
        yield emulator
    finally:
        emulator.close()


def test_pools_are_the_catalog_offers_of_the_configured_types_per_zone_and_purchase(
    moto_ec2: MotoEC2,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = AwsBackend(settings(moto_ec2), home=tmp_path)
    pools = backend.pools()
    # the catalog lists p5.48xlarge in 6 AZs of us-east-1 and one Local Zone (use1-atl2-az1), which an
    # account only has after an opt-in: moto's account has not, so it is left out
    assert {p.zone for p in pools} == {f"use1-az{n}" for n in range(1, 7)}
    assert {p.purchase for p in pools} == {Purchase.ON_DEMAND, Purchase.SPOT}
    assert all(p.capacity_nodes == 4 and p.used_nodes == 0 and p.backend == "aws:use1" for p in pools)
    assert all(p.gpus_per_node == 8 and p.accelerator == "H100" for p in pools)
    spot = pool_of(backend, "use1-az6", Purchase.SPOT)
    assert spot.price_per_node_hour < pool_of(backend, "use1-az6", Purchase.ON_DEMAND).price_per_node_hour
    assert spot.preemptions_per_hour > 0
    with pytest.raises(ValueError, match=r"no catalog offer for p9\.nope"):
        AwsBackend(settings(moto_ec2, instance_types=("p9.nope",)), home=tmp_path)


def test_a_gang_is_one_all_or_nothing_run_instances_in_a_cluster_placement_group(
    moto_ec2: MotoEC2,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = AwsBackend(settings(moto_ec2), home=tmp_path)
    pool = pool_of(backend, "use1-az6", Purchase.SPOT)
    env = {"OVERCAST_JOB_ID": "j1", "OVERCAST_ATTEMPT": "1", "OVERCAST_CHECKPOINT_DIR": "s3://b/ckpt j1"}
    request = LaunchRequest("j1", 1, pool, 2, gpu_job("j", "echo hi"), env)
    allocation = backend.launch(request)
    assert moto_ec2.run_calls == [
        {"type": P5, "az": "us-east-1a", "count": 2, "group": "overcast-j1-1", "market": "spot"}
    ]
    found = moto_ec2.client().describe_instances(Filters=[{"Name": "tag:overcast:job", "Values": ["j1"]}])
    instances = [i for r in found["Reservations"] for i in r["Instances"]]
    assert sorted(i["InstanceId"] for i in instances) == sorted(allocation.handle.split(","))
    assert all(i["InstanceLifecycle"] == "spot" for i in instances)
    ranks = sorted({t["Key"]: t["Value"] for t in i["Tags"]}["overcast:rank"] for i in instances)
    assert ranks == ["0", "1"]
    attr = moto_ec2.client().describe_instance_attribute(
        InstanceId=instances[0]["InstanceId"], Attribute="userData"
    )
    script = base64.b64decode(attr["UserData"]["Value"]).decode()
    assert "export OVERCAST_CHECKPOINT_DIR='s3://b/ckpt j1'" in script
    assert "export OVERCAST_NUM_NODES=2" in script and "echo hi" in script
    assert "-m overcast.backends.aws_agent" in script
    # the same attempt again (a replayed apply) launches nothing new
    assert backend.launch(request).handle == allocation.handle and len(moto_ec2.run_calls) == 1
    assert backend.active() == [("j1", 1)]
    assert pool_of(backend, "use1-az6", Purchase.SPOT).used_nodes == 2
    backend.stop("j1", 1, grace_seconds=0.0)
    assert backend.active() == [] and backend.poll() == []
    assert moto_ec2.placement_groups == set()  # deleted once its instances were gone


def test_capacity_errors_outages_and_other_errors_map_to_overcast_exceptions(
    moto_ec2: MotoEC2,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = AwsBackend(settings(moto_ec2), home=tmp_path)
    pool = pool_of(backend, "use1-az6", Purchase.SPOT)
    moto_ec2.set_capacity(P5, "us-east-1a", 1)
    with pytest.raises(CapacityError, match="InsufficientInstanceCapacity"):
        backend.launch(LaunchRequest("big", 1, pool, 2, gpu_job("j", "true")))
    # EC2 sends it as HTTP 500: botocore's standard mode tried 3 times in all, then it is a CapacityError
    assert len(moto_ec2.run_calls) == 3
    assert backend.active() == [] and moto_ec2.placement_groups == set()  # nothing left behind
    backend.launch(LaunchRequest("small", 1, pool, 1, gpu_job("j", "true", nodes=1)))  # 1 node fits
    down = AwsBackend(settings(moto_ec2, endpoint_url="http://127.0.0.1:9"), home=tmp_path / "down")
    with pytest.raises(ProviderDown, match="unreachable"):
        down.launch(LaunchRequest("x", 1, pool, 1, gpu_job("j", "true", nodes=1)))
    assert {p.health.value for p in down.pools()} == {"down"}

    def error(code: str, status: int = 400) -> ClientError:
        reply = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(reply, "RunInstances")  # type: ignore[arg-type]

    assert isinstance(translate("run_instances", error("AuthFailure", 401)), ProviderDown)
    assert isinstance(translate("run_instances", error("UnauthorizedOperation", 403)), ProviderDown)
    assert isinstance(translate("run_instances", error("InsufficientCapacity", 500)), CapacityError)
    bad = translate("run_instances", error("InvalidAMIID.Malformed"))
    assert isinstance(bad, AwsError) and "InvalidAMIID.Malformed" in str(bad)


def _result_lines(vms: VmEmulator, job_id: str, attempt: int) -> list[str]:
    instances = vms.instances(overcast_job=job_id, overcast_attempt=str(attempt))
    text = "".join(vms.console(i["InstanceId"]) for i in instances)
    return [line for line in text.splitlines() if line.startswith("RESULT")]


def test_loop_fails_over_on_capacity_resumes_after_a_spot_reclaim_and_reconciles_after_restart(
    moto_ec2: MotoEC2,  # noqa: F811
    vms: VmEmulator,
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    aws = settings(moto_ec2)
    loop = fast_loop(tmp_path, store, AwsBackend(aws, home=tmp_path))
    moto_ec2.set_capacity(P5, "us-east-1a", 0)  # the cheapest spot pool (use1-az6) is sold out
    record = store.submit(
        "default", gpu_job("train", train_command(steps=150, step_seconds=0.03), 2, SpotPolicy.REQUIRED)
    )
    ckpt = tmp_path / "checkpoints" / record.id / "checkpoint.npz"
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING and ckpt.exists())
    first = state(store, record.id)
    refused = pool_id("aws", REGION, "use1-az6", P5, Purchase.SPOT)
    assert first.pool_id != refused and first.pool_id is not None and first.pool_id.endswith("/spot")
    assert store.pool_health()[refused].health == "out-of-capacity"
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("capacity-error") < kinds.index("started")
    gang = vms.instances(overcast_job=record.id, overcast_attempt=str(first.attempt))
    assert len(gang) == 2 and len({i["Placement"]["AvailabilityZone"] for i in gang}) == 1

    # The loop dies; a new loop with a new backend (same store and home) finds the gang running in EC2.
    loop = fast_loop(tmp_path, store, AwsBackend(aws, home=tmp_path))
    run_until(loop, lambda: loop.leader)  # once the dead loop's lease has expired: it reconciles first
    after = state(store, record.id)
    assert (after.state, after.attempt) == (JobState.RUNNING, first.attempt)
    assert "requeued" not in [e.kind for e in store.events(job_id=record.id)]

    # A spot reclaim without notice: EC2 terminates rank 1 from outside overcast.
    rank1 = next(i for i in gang if i["AmiLaunchIndex"] == 1)
    moto_ec2.client().terminate_instances(InstanceIds=[rank1["InstanceId"]])
    run_until(loop, lambda: state(store, record.id).state.terminal, timeout=40)
    final = state(store, record.id)
    assert (final.state, final.restarts, final.attempt) == (JobState.SUCCEEDED, 1, first.attempt + 1)
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("preempted") < kinds.index("requeued") < kinds.index("succeeded")
    reference = reference_result(tmp_path / "ref", steps=150)
    assert _result_lines(vms, record.id, final.attempt) == [reference] * 2
    final_gang = vms.instances(overcast_job=record.id, overcast_attempt=str(final.attempt))
    resumed = [
        re.search(r"resumed from checkpoint at step (\d+)", vms.console(i["InstanceId"])) for i in final_gang
    ]
    assert all(m and 0 < int(m[1]) < 150 for m in resumed), resumed  # from mid-run, not from the end
    # every instance of the job is gone (the agents terminated themselves, the backend the rest)
    states = {i["State"]["Name"] for i in vms.instances(overcast_job=record.id)}
    assert states == {"terminated"}
    backend = loop.backends["aws:use1"]
    assert backend.poll() == [] and backend.active() == []  # the outcome was acknowledged: nothing left


def test_stop_and_a_spot_notice_give_the_job_sigterm_through_the_agent_and_failures_are_reported(
    moto_ec2: MotoEC2,  # noqa: F811
    vms: VmEmulator,
    tmp_path: Path,
) -> None:
    backend = AwsBackend(settings(moto_ec2), home=tmp_path)
    pool = pool_of(backend, "use1-az2", Purchase.ON_DEMAND)
    saver = "trap 'echo saved; exit 143' TERM; echo ready; while true; do sleep 0.05; done"
    backend.launch(LaunchRequest("s", 1, pool, 2, gpu_job("s", saver)))
    backend.launch(LaunchRequest("f", 1, pool, 1, gpu_job("f", "exit 3", nodes=1)))
    spot = pool_of(backend, "use1-az2", Purchase.SPOT)
    backend.launch(LaunchRequest("n", 1, spot, 1, gpu_job("n", saver, nodes=1)))
    events: list = []
    wanted = {("s", EventKind.STARTED), ("f", EventKind.FAILED), ("n", EventKind.STARTED)}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not wanted <= {(e.job_id, e.kind) for e in events}:
        events += backend.poll()
        time.sleep(0.1)
    kinds = {(e.job_id, e.kind) for e in events}
    assert ("s", EventKind.STARTED) in kinds and ("f", EventKind.FAILED) in kinds
    failed = next(e for e in events if e.kind is EventKind.FAILED)
    assert failed.exit_code == 3 and "exited with 3" in failed.detail
    # STARTED means every agent is up, not that the job has set its trap yet
    ready = [i["InstanceId"] for i in vms.instances(overcast_job="s") + vms.instances(overcast_job="n")]
    assert eventually(lambda: all("ready" in vms.console(vm) for vm in ready))
    # EC2's two-minute spot notice: the agent sees it in the metadata service, the job saves and exits
    (noticed,) = vms.instances(overcast_job="n")
    vms.spot_notice(noticed["InstanceId"])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(
        e.job_id == "n" for e in events if e.kind is EventKind.PREEMPTED
    ):
        events += backend.poll()
        time.sleep(0.1)
    preempted = next(e for e in events if e.job_id == "n" and e.kind is EventKind.PREEMPTED)
    assert "SIGTERM" in preempted.detail and "saved" in vms.console(noticed["InstanceId"])
    started = time.monotonic()
    backend.stop("s", 1, grace_seconds=15.0)
    assert time.monotonic() - started < 10  # the job saved and the agents ended their instances
    gang = vms.instances(overcast_job="s")
    assert all({t["Key"]: t["Value"] for t in i["Tags"]}.get("overcast:exit") == "143" for i in gang)
    assert all("saved" in vms.console(i["InstanceId"]) for i in gang)
    assert backend.poll() == [] and backend.active() == []


def test_an_aws_entry_of_the_fleet_file_runs_jobs_through_the_loop(
    moto_ec2: MotoEC2,  # noqa: F811
    vms: VmEmulator,
    tmp_path: Path,
) -> None:
    text = f"""\
aws:
  - name: use1
    region: {REGION}
    endpoint_url: {moto_ec2.endpoint_url}
    instance_types: [{P5}]
    image_id: {moto_ec2.image_id()}
    max_nodes: 2
"""
    job = gpu_job("hello", "sleep 1; echo hello from $OVERCAST_NODE_RANK", 1)
    job_id = run_fleet_job(text, "aws:use1", tmp_path, job, lambda s: s is JobState.RUNNING)
    (instance,) = vms.instances(overcast_job=job_id)
    assert "hello from 0" in vms.console(instance["InstanceId"])


def test_a_gang_whose_agent_never_starts_fails_instead_of_running_forever(
    moto_ec2: MotoEC2,  # noqa: F811
    vms: VmEmulator,
    tmp_path: Path,
) -> None:
    # an AMI without overcast: the user-data cannot start the agent, and the instance would bill forever
    backend = AwsBackend(
        settings(moto_ec2, python="no-such-python3", agent_timeout_seconds=1.0), home=tmp_path
    )
    pool = pool_of(backend, "use1-az2", Purchase.ON_DEMAND)
    backend.launch(LaunchRequest("broken", 1, pool, 1, gpu_job("b", "true", nodes=1)))
    events = wait_events(backend, bool, timeout=15)
    assert [(e.kind, e.detail) for e in events] == [(EventKind.FAILED, NO_AGENT)]  # never STARTED
    (instance,) = vms.instances(overcast_job="broken")
    assert "no-such-python3" in vms.console(instance["InstanceId"])  # bash: command not found
    backend.stop("broken", 1, grace_seconds=0.0)  # what the loop does after a failure
    assert backend.poll() == [] and backend.active() == []
