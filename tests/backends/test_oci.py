"""The OCI backend against a local fake of OCI's Compute API (tests/fixtures/oci_fake.py), through the
official SDK (``oci``), unchanged but for ``service_endpoint`` and a throwaway signing key.

The fake has no machines: ``OciVmEmulator`` (tests/backends/oci_vm.py) plays the hypervisor and runs
each running instance's user-data as local processes, so the node agent and the job really run.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path

import oci
import pytest

from overcast.backends.base import CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.backends.oci import NO_AGENT, OciBackend
from overcast.backends.oci_client import OciError, OciSettings, translate
from overcast.catalog.load import load_offers
from overcast.catalog.pools import pool_id
from overcast.placement.pool import Pool, Purchase
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import JobState, Store
from tests.backends.cloud_checks import eventually, fast_loop, run_fleet_job, wait_events
from tests.backends.oci_vm import OciVmEmulator
from tests.control.harness import reference_result, run_until, state, train_command
from tests.fixtures.oci_fake import COMPARTMENT, REGION, FakeOci, oci_fake, oci_server  # noqa: F401

H100 = "BM.GPU.H100.8"
AD1, AD2 = "US-ASHBURN-AD-1", "US-ASHBURN-AD-2"


@pytest.fixture
def config(oci_server: tuple[FakeOci, Path]) -> Path:  # noqa: F811
    return oci_server[1]


def settings(fake: FakeOci, config: Path, **kw: object) -> OciSettings:
    base: dict = dict(name="iad", region=REGION, compartment_id=COMPARTMENT, shapes=(H100,),
                      image_id="ocid1.image.oc1.iad.fake", subnet_id="ocid1.subnet.oc1.iad.fake",
                      max_nodes=4, endpoint=fake.endpoint, config_file=str(config),
                      agent_poll_seconds=0.2)  # fmt: skip
    return OciSettings(**(base | kw))


def gpu_job(name: str, run: str, nodes: int = 2) -> JobSpec:
    resources = Resources(accelerators=(AcceleratorRequest(name="H100", count=8),))
    return JobSpec(name=name, run=run, num_nodes=nodes, resources=resources)


def pool_of(backend: OciBackend, ad: str, purchase: Purchase = Purchase.ON_DEMAND) -> Pool:
    wanted = pool_id("oci", REGION, ad, H100, purchase)
    return next(p for p in backend.pools() if p.id == wanted)


def vms_of(fake: FakeOci, job: str) -> list[str]:
    return [iid for iid, i in fake.instances.items() if i.data["freeformTags"]["overcast-job"] == job]


def poll_until(backend: OciBackend, wanted: set, timeout: float = 20.0) -> list:
    return wait_events(backend, lambda events: wanted <= {(e.job_id, e.kind) for e in events}, timeout)


@pytest.fixture
def vms(oci_fake: FakeOci, config: Path, tmp_path: Path) -> Iterator[OciVmEmulator]:  # noqa: F811
    emulator = OciVmEmulator(oci_fake, config, tmp_path / "vms").start()
    try:
        yield emulator
    finally:
        emulator.close()


def test_pools_are_the_catalog_offers_per_availability_domain_on_demand_only(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,
    tmp_path: Path,
) -> None:
    backend = OciBackend(settings(oci_fake, config), home=tmp_path)
    pools = backend.pools()
    # the catalog has no OCI preemptible prices: on-demand pools only, one per AD the tenancy has
    assert {p.zone for p in pools} == {AD1, AD2, "US-ASHBURN-AD-3"}
    assert {p.purchase for p in pools} == {Purchase.ON_DEMAND}
    assert all(p.capacity_nodes == 4 and p.used_nodes == 0 and p.backend == "oci:iad" for p in pools)
    assert all(p.gpus_per_node == 8 and p.accelerator == "H100" for p in pools)
    with pytest.raises(ValueError, match=r"no catalog offer for BM\.GPU\.NOPE"):
        OciBackend(settings(oci_fake, config, shapes=("BM.GPU.NOPE",)), home=tmp_path)
    assert oci_fake.unsigned == 0  # every request the SDK sent was signed


def test_a_gang_is_n_tagged_launches_in_one_ad_idempotent_and_preemptible_on_spot_pools(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,
    tmp_path: Path,
) -> None:
    # offers with a preemptible price (the bundled catalog has none) give spot pools
    offers = [dataclasses.replace(o, spot_price=o.price / 2) for o in load_offers() if o.provider == "oci"]
    backend = OciBackend(settings(oci_fake, config), home=tmp_path, offers=offers)
    env = {"OVERCAST_JOB_ID": "j1", "OVERCAST_ATTEMPT": "1", "OVERCAST_CHECKPOINT_DIR": "/ckpt dir/j1"}
    request = LaunchRequest("j1", 1, pool_of(backend, AD2), 3, gpu_job("j", "echo hi", 3), env)
    allocation = backend.launch(request)
    assert [(b["shape"], b["availabilityDomain"]) for b in oci_fake.launches] == [(H100, f"Fake:{AD2}")] * 3
    tags = [b["freeformTags"] for b in oci_fake.launches]
    assert [t["overcast-rank"] for t in tags] == ["0", "1", "2"]
    assert all(t["overcast-backend"] == "oci:iad" and t["overcast-job"] == "j1" for t in tags)
    assert all("preemptibleInstanceConfig" not in b for b in oci_fake.launches)  # on-demand
    script = base64.b64decode(oci_fake.launches[0]["metadata"]["user_data"]).decode()
    assert "export OVERCAST_CHECKPOINT_DIR='/ckpt dir/j1'" in script and "echo hi" in script
    assert "export OVERCAST_NUM_NODES=3" in script and "-m overcast.backends.oci_agent" in script
    assert sorted(allocation.handle.split(",")) == sorted(oci_fake.instances)
    # the same attempt again (a replayed apply) launches nothing new
    assert backend.launch(request).handle == allocation.handle and len(oci_fake.launches) == 3
    spot = LaunchRequest("s", 1, pool_of(backend, AD1, Purchase.SPOT), 1, gpu_job("s", "true", 1))
    backend.launch(spot)
    action = oci_fake.launches[-1]["preemptibleInstanceConfig"]["preemptionAction"]
    assert action == {"type": "TERMINATE", "preserveBootVolume": False}
    # A loop that died in the middle of a launch (after rank 0): the replayed launch starts rank 1 only.
    real_launch, calls = backend.compute.launch_instance, []

    def dies_after_one(*args: object, **kw: object) -> object:
        if calls:
            raise SystemExit("the loop's process died")  # not an Exception: no rollback ran
        calls.append(1)
        return real_launch(*args, **kw)

    backend.compute.launch_instance = dies_after_one
    crashed = LaunchRequest("c", 1, pool_of(backend, AD1), 2, gpu_job("c", "true"))
    with pytest.raises(SystemExit):
        backend.launch(crashed)
    backend.compute.launch_instance = real_launch
    backend.launch(crashed)
    assert [b["freeformTags"]["overcast-rank"] for b in oci_fake.launches[-2:]] == ["0", "1"]
    assert len(vms_of(oci_fake, "c")) == 2
    backend.stop("c", 1, grace_seconds=0.0)
    # 6 instances, listed in pages of 3 (opc-next-page)
    assert backend.active() == [("j1", 1), ("s", 1)]
    assert pool_of(backend, AD2).used_nodes == 3
    backend.stop("j1", 1, grace_seconds=0.0)
    backend.stop("s", 1, grace_seconds=0.0)
    assert backend.active() == [] and backend.poll() == []
    assert oci_fake.unsigned == 0


def test_capacity_and_limit_errors_roll_the_gang_back_and_outages_are_provider_down(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,
    tmp_path: Path,
) -> None:
    backend = OciBackend(settings(oci_fake, config), home=tmp_path)
    pool = pool_of(backend, AD1)
    oci_fake.set_capacity(H100, AD1, 1)
    with pytest.raises(CapacityError, match="Out of host capacity"):
        backend.launch(LaunchRequest("big", 1, pool, 2, gpu_job("j", "true")))
    # rank 0 launched, rank 1 got HTTP 500 "Out of host capacity." once (no SDK retries), and rank 0
    # was terminated: nothing left behind
    assert len(oci_fake.launches) == 2
    assert {i.data["lifecycleState"] for i in oci_fake.instances.values()} <= {"TERMINATING", "TERMINATED"}
    assert backend.active() == []
    oci_fake.set_limit(H100, 0)
    with pytest.raises(CapacityError, match="LimitExceeded"):
        backend.launch(LaunchRequest("quota", 1, pool_of(backend, AD2), 1, gpu_job("j", "true", 1)))
    down = OciBackend(settings(oci_fake, config, endpoint="http://127.0.0.1:9"), home=tmp_path / "down")
    started = time.monotonic()
    with pytest.raises(ProviderDown, match="unreachable"):
        down.launch(LaunchRequest("x", 1, pool, 1, gpu_job("j", "true", nodes=1)))
    assert {p.health.value for p in down.pools()} == {"down"}
    # bounded retries (3 tries each); the SDK's default strategy and its paginator retry for minutes
    assert time.monotonic() - started < 15

    def error(status: int, code: str, message: str = "m") -> oci.exceptions.ServiceError:
        return oci.exceptions.ServiceError(status, code, {}, message)

    assert isinstance(translate("x", error(401, "NotAuthenticated")), ProviderDown)
    assert isinstance(translate("x", error(429, "TooManyRequests")), ProviderDown)
    assert isinstance(translate("x", error(503, "ServiceUnavailable")), ProviderDown)
    assert isinstance(translate("x", error(500, "InternalError", "Out of host capacity.")), CapacityError)
    bad = translate("launch_instance", error(404, "NotAuthorizedOrNotFound", "image"))
    assert isinstance(bad, OciError) and "NotAuthorizedOrNotFound" in str(bad)


def test_loop_fails_over_on_capacity_resumes_after_a_lost_node_and_reconciles_after_restart(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,
    vms: OciVmEmulator,
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    conf = settings(oci_fake, config)
    loop = fast_loop(tmp_path, store, OciBackend(conf, home=tmp_path))
    oci_fake.set_capacity(H100, AD1, 1)  # one node left in AD-1: a 2-node gang does not fit there
    record = store.submit("default", gpu_job("train", train_command(steps=150, step_seconds=0.03), 2))
    ckpt = tmp_path / "checkpoints" / record.id / "checkpoint.npz"
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING and ckpt.exists())
    first = state(store, record.id)
    refused = pool_id("oci", REGION, AD1, H100, Purchase.ON_DEMAND)
    assert first.pool_id != refused and first.pool_id is not None
    assert store.pool_health()[refused].health == "out-of-capacity"
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("capacity-error") < kinds.index("started")
    gang = vms.instances(job=record.id, attempt=str(first.attempt))
    assert len(gang) == 2 and len({i["availabilityDomain"] for i in gang}) == 1
    (cluster,) = {i["computeClusterId"] for i in gang}  # both ranks in the gang's compute cluster
    assert oci_fake.clusters.clusters[cluster]["availabilityDomain"] == gang[0]["availabilityDomain"]
    refused_ranks = vms.instances(job=record.id, attempt=str(first.attempt - 1))
    assert {i["lifecycleState"] for i in refused_ranks} <= {"TERMINATING", "TERMINATED"}  # rolled back

    # The loop dies; a new loop with a new backend (same store and home) finds the gang running.
    loop = fast_loop(tmp_path, store, OciBackend(conf, home=tmp_path))
    run_until(loop, lambda: loop.leader)
    after = state(store, record.id)
    assert (after.state, after.attempt) == (JobState.RUNNING, first.attempt)
    assert "requeued" not in [e.kind for e in store.events(job_id=record.id)]

    # A lost node: rank 1 is terminated outside overcast (a host failure, a console click).
    rank1 = next(i for i in gang if i["freeformTags"]["overcast-rank"] == "1")
    oci_fake.terminate(rank1["id"])
    run_until(loop, lambda: state(store, record.id).state.terminal, timeout=40)
    final = state(store, record.id)
    assert (final.state, final.restarts, final.attempt) == (JobState.SUCCEEDED, 1, first.attempt + 1)
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("preempted") < kinds.index("requeued") < kinds.index("succeeded")
    final_gang = vms.instances(job=record.id, attempt=str(final.attempt))
    consoles = [vms.console(i["id"]) for i in final_gang]
    results = [line for text in consoles for line in text.splitlines() if line.startswith("RESULT")]
    assert results == [reference_result(tmp_path / "ref", steps=150)] * 2
    resumed = [re.search(r"resumed from checkpoint at step (\d+)", text) for text in consoles]
    assert all(m and 0 < int(m[1]) < 150 for m in resumed), resumed  # from mid-run, not from the end
    head = next(i for i in final_gang if i["freeformTags"]["overcast-rank"] == "0")
    assert all(f"head={head['freeformTags']['overcast-addr']}" in text for text in consoles)
    vms.wait_gone()
    assert {i["lifecycleState"] for i in vms.instances(job=record.id)} == {"TERMINATED"}
    assert len({i["computeClusterId"] for i in final_gang} | {cluster}) == 2  # a cluster per attempt
    backend = loop.backends["oci:iad"]
    assert backend.poll() == [] and backend.active() == []
    assert oci_fake.clusters.active() == []  # every attempt's cluster deleted, the rolled-back one's too


def test_stop_gives_the_job_sigterm_through_the_agent_and_failures_are_reported(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,
    vms: OciVmEmulator,
    tmp_path: Path,
) -> None:
    backend = OciBackend(settings(oci_fake, config), home=tmp_path)
    pool = pool_of(backend, AD2)
    saver = "trap 'echo saved; exit 143' TERM; echo ready; while true; do sleep 0.05; done"
    backend.launch(LaunchRequest("s", 1, pool, 2, gpu_job("s", saver)))
    backend.launch(LaunchRequest("f", 1, pool, 1, gpu_job("f", "exit 3", nodes=1)))
    events = poll_until(backend, {("s", EventKind.STARTED), ("f", EventKind.FAILED)})
    failed = next(e for e in events if e.kind is EventKind.FAILED)
    assert failed.exit_code == 3 and "exited with 3" in failed.detail
    assert ("s", EventKind.STARTED) in {(e.job_id, e.kind) for e in events}
    # STARTED means every agent is up, not that the job has set its trap yet
    ready = [i["id"] for i in vms.instances(job="s")]
    assert eventually(lambda: all("ready" in vms.console(vm) for vm in ready))
    started = time.monotonic()
    backend.stop("s", 1, grace_seconds=15.0)
    assert time.monotonic() - started < 10  # the job saved and the agents ended their instances
    gang = vms.instances(job="s")
    assert all(i["freeformTags"].get("overcast-exit") == "143" for i in gang)
    assert all(i["freeformTags"].get("overcast-sigterm") == "1" for i in gang)
    assert all("saved" in vms.console(i["id"]) for i in gang)
    assert backend.poll() == [] and backend.active() == []


def test_a_gang_whose_agent_never_starts_fails_instead_of_running_forever(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,
    vms: OciVmEmulator,
    tmp_path: Path,
) -> None:
    # an image without overcast: the user-data cannot start the agent, and the instance would bill forever
    conf = settings(oci_fake, config, python="no-such-python3", agent_timeout_seconds=1.0)
    backend = OciBackend(conf, home=tmp_path)
    backend.launch(LaunchRequest("broken", 1, pool_of(backend, AD1), 1, gpu_job("b", "true", nodes=1)))
    events = poll_until(backend, {("broken", EventKind.FAILED)}, timeout=15)
    assert [(e.kind, e.detail) for e in events] == [(EventKind.FAILED, NO_AGENT)]  # never STARTED
    (instance,) = vms.instances(job="broken")
    assert "no-such-python3" in vms.console(instance["id"])
    backend.stop("broken", 1, grace_seconds=0.0)  # what the loop does after a failure
    assert backend.poll() == [] and backend.active() == []


def test_an_oci_entry_of_the_fleet_file_runs_jobs_through_the_loop(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,
    vms: OciVmEmulator,
    tmp_path: Path,
) -> None:
    text = f"""\
oci:
  - name: iad
    region: {REGION}
    compartment_id: {COMPARTMENT}
    endpoint: {oci_fake.endpoint}
    config_file: {config}
    shapes: [{H100}]
    image_id: ocid1.image.oc1.iad.fake
    subnet_id: ocid1.subnet.oc1.iad.fake
    max_nodes: 2
"""
    job = gpu_job("hello", "echo hello from $OVERCAST_NODE_RANK", 1)
    job_id = run_fleet_job(text, "oci:iad", tmp_path, job, lambda s: s is not JobState.PENDING)
    (instance,) = vms.instances(job=job_id)
    assert "hello from 0" in vms.console(instance["id"])
