"""The GCP backend against a local fake of the Compute Engine REST API (tests/fixtures/gcp_fake.py),
through the official SDK (``google-cloud-compute``, REST transport), unchanged but for ``api_endpoint``
and the credentials (anonymous for the backend; the agents get tokens from their metadata server).

The fake has no machines: ``GceVmEmulator`` (tests/backends/gcp_vm.py) plays the hypervisor and runs
each running instance's startup script as local processes, so the node agent and the job really run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials

from overcast.backends.base import CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.backends.gcp import NO_AGENT, GcpBackend
from overcast.backends.gcp_client import GcpError, GcpSettings, label_value, translate
from overcast.backends.gcp_spec import machine
from overcast.catalog.fleet import FleetError, parse_fleet
from overcast.catalog.pools import pool_id
from overcast.placement.pool import Pool, Purchase
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import JobState, Store
from tests.backends.cloud_checks import eventually, fast_loop, run_fleet_job, wait_events
from tests.backends.gcp_vm import GceVmEmulator
from tests.control.harness import reference_result, run_until, state, train_command
from tests.fixtures.gcp_fake import PROJECT, REGION, FakeGce
from tests.fixtures.gcp_http import gce, gce_server  # noqa: F401

A3 = "a3-highgpu-8g"
ZA, ZB = "us-central1-a", "us-central1-b"


def settings(fake: FakeGce, **kw: object) -> GcpSettings:
    base: dict = dict(name="usc", project=PROJECT, region=REGION, machine_types=(A3,), zones=(ZA, ZB),
                      image="projects/overcast-test/global/images/gpu", max_nodes=4, endpoint=fake.endpoint,
                      agent_poll_seconds=0.2)  # fmt: skip
    return GcpSettings(**(base | kw))


def backend_of(fake: FakeGce, home: Path, **kw: object) -> GcpBackend:
    return GcpBackend(settings(fake, **kw), home=home, credentials=AnonymousCredentials())


def gpu_job(name: str, run: str, nodes: int = 2) -> JobSpec:
    resources = Resources(accelerators=(AcceleratorRequest(name="H100", count=8),))
    return JobSpec(name=name, run=run, num_nodes=nodes, resources=resources)


def pool_of(backend: GcpBackend, zone: str, purchase: Purchase = Purchase.ON_DEMAND) -> Pool:
    wanted = pool_id("gcp", REGION, zone, A3, purchase)
    return next(p for p in backend.pools() if p.id == wanted)


def poll_until(backend: GcpBackend, wanted: set, timeout: float = 20.0) -> list:
    return wait_events(backend, lambda events: wanted <= {(e.job_id, e.kind) for e in events}, timeout)


def items(instance: dict) -> dict[str, str]:
    return {i["key"]: i["value"] for i in instance["metadata"]["items"]}


@pytest.fixture
def vms(gce: FakeGce, tmp_path: Path) -> Iterator[GceVmEmulator]:  # noqa: F811
    emulator = GceVmEmulator(gce, tmp_path / "vms").start()
    try:
        yield emulator
    finally:
        emulator.close()


def test_pools_are_the_catalog_offers_of_the_configured_zones_on_demand_and_spot(
    gce: FakeGce,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = backend_of(gce, tmp_path)
    pools = backend.pools()
    assert {(p.zone, p.purchase) for p in pools} == {(z, b) for z in (ZA, ZB) for b in Purchase if
                                                     b in (Purchase.ON_DEMAND, Purchase.SPOT)}  # fmt: skip
    assert all(p.capacity_nodes == 4 and p.used_nodes == 0 and p.backend == "gcp:usc" for p in pools)
    assert all(p.gpus_per_node == 8 and p.accelerator == "H100" for p in pools)
    with pytest.raises(ValueError, match=r"no catalog offer for a9-nope"):
        backend_of(gce, tmp_path, machine_types=("a9-nope",))
    with pytest.raises(ValueError, match="TPU"):
        backend_of(gce, tmp_path, machine_types=("tpu-v5litepod-8",))
    # the catalog's N1 + attached GPU names become a machine type and guest accelerators
    assert machine("n1-highmem-8+1xT4") == ("n1-highmem-8", [{"accelerator_type": "nvidia-tesla-t4",
                                                              "accelerator_count": 1}])  # fmt: skip
    assert machine(A3) == (A3, [])
    assert label_value("j-abc") == "j-abc" and re.fullmatch(
        r"gcp-usc-serve-[0-9a-f]{8}", label_value("gcp:usc/serve")
    )


def test_a_gang_is_one_bulk_insert_in_one_zone_with_a_compact_policy_idempotent_and_spot(
    gce: FakeGce,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = backend_of(gce, tmp_path)
    env = {"OVERCAST_JOB_ID": "j1", "OVERCAST_ATTEMPT": "1", "OVERCAST_CHECKPOINT_DIR": "/ckpt dir/j1"}
    request = LaunchRequest("j1", 1, pool_of(backend, ZB), 3, gpu_job("j", "echo hi", 3), env)
    allocation = backend.launch(request)
    (body,) = gce.bulk_inserts
    assert (body["count"], body["minCount"]) == ("3", "3")  # all or nothing (int64 as JSON strings)
    props = body["instanceProperties"]
    assert props["machineType"] == A3 and props["scheduling"] == {"onHostMaintenance": "TERMINATE",
                                                                  "automaticRestart": False}  # fmt: skip
    (policy,) = props["resourcePolicies"]
    assert gce.policies[policy]["groupPlacementPolicy"] == {"collocation": "COLLOCATED", "vmCount": 3}
    gang = [i for i in gce.listed() if i["labels"]["overcast-job"] == "j1"]
    assert sorted(i["name"] for i in gang) == sorted(allocation.handle.split(","))
    assert {i["zone"].rsplit("/", 1)[-1] for i in gang} == {ZB} and len(gang) == 3
    assert all(i["labels"]["overcast-backend"] == label_value("gcp:usc") for i in gang)
    meta = items(gang[0])
    assert meta["overcast-backend"] == "gcp:usc" and meta["overcast-pool"] == pool_of(backend, ZB).id
    assert "export OVERCAST_CHECKPOINT_DIR='/ckpt dir/j1'" in meta["startup-script"]
    assert "-m overcast.backends.gcp_agent" in meta["startup-script"]
    # the same attempt again (a replayed apply) launches nothing new
    assert backend.launch(request).handle == allocation.handle and len(gce.bulk_inserts) == 1
    spot = LaunchRequest("s", 1, pool_of(backend, ZA, Purchase.SPOT), 1, gpu_job("s", "true", 1))
    backend.launch(spot)
    last = gce.bulk_inserts[-1]["instanceProperties"]
    assert last["scheduling"]["provisioningModel"] == "SPOT"
    assert last["scheduling"]["instanceTerminationAction"] == "DELETE"
    assert "resourcePolicies" not in last  # one node: no placement policy
    # 4 instances, listed in pages of 3 (nextPageToken)
    assert backend.active() == [("j1", 1), ("s", 1)]
    assert pool_of(backend, ZB).used_nodes == 3
    backend.stop("j1", 1, grace_seconds=0.0)
    backend.stop("s", 1, grace_seconds=0.0)
    assert backend.active() == []
    assert wait_events(backend, lambda _: not gce.policies and not gce.listed(), 5) == []
    assert not gce.policies  # the gang's placement policy went once its instances were gone


def test_capacity_and_quota_errors_leave_nothing_behind_and_outages_are_provider_down(
    gce: FakeGce,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = backend_of(gce, tmp_path)
    gce.set_capacity(A3, ZA, 1)
    with pytest.raises(CapacityError, match="ZONE_RESOURCE_POOL_EXHAUSTED"):
        backend.launch(LaunchRequest("big", 1, pool_of(backend, ZA), 2, gpu_job("j", "true")))
    assert len(gce.bulk_inserts) == 1 and gce.listed() == []  # minCount = count: GCP made none
    assert backend.active() == [] and backend.poll() == []
    assert gce.policies == {}  # the poll's clean-up deleted the unused placement policy
    gce.set_quota(A3, 0)
    with pytest.raises(CapacityError, match="quotaExceeded"):
        backend.launch(LaunchRequest("quota", 1, pool_of(backend, ZB), 1, gpu_job("j", "true", 1)))
    down = backend_of(gce, tmp_path / "down", endpoint="http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(ProviderDown, match="unreachable"):
        down.launch(LaunchRequest("x", 1, pool_of(backend, ZA), 1, gpu_job("j", "true", nodes=1)))
    assert {p.health.value for p in down.pools()} == {"down"}
    assert time.monotonic() - started < 15  # bounded retries, not the SDK's 600 s timeouts

    # no credentials at all (no Application Default Credentials): the pools are down, nothing raises
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    adc = GcpBackend(settings(gce), home=tmp_path / "adc")
    assert {p.health.value for p in adc.pools()} == {"down"}
    with pytest.raises(ProviderDown, match="credentials"):
        adc.active()

    def error(cls: type, reason: str, message: str = "m") -> Exception:
        return cls(message, errors=[{"reason": reason, "message": message}])

    assert isinstance(translate("x", error(gexc.Unauthorized, "authError")), ProviderDown)
    assert isinstance(translate("x", error(gexc.Forbidden, "rateLimitExceeded")), ProviderDown)  # API quota
    assert isinstance(translate("x", error(gexc.ServiceUnavailable, "backendError")), ProviderDown)
    bad = translate("bulk insert", error(gexc.BadRequest, "invalid", "image not found"))
    assert isinstance(bad, GcpError) and "image not found" in str(bad)


def test_loop_fails_over_on_stockout_resumes_after_a_deleted_instance_and_reconciles_after_restart(
    gce: FakeGce,  # noqa: F811
    vms: GceVmEmulator,
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    conf = settings(gce, purchases=("on-demand",))
    loop = fast_loop(tmp_path, store, GcpBackend(conf, home=tmp_path, credentials=AnonymousCredentials()))
    gce.set_capacity(A3, ZA, 1)  # one node left in zone a: a 2-node gang does not fit there
    record = store.submit("default", gpu_job("train", train_command(steps=150, step_seconds=0.03), 2))
    ckpt = tmp_path / "checkpoints" / record.id / "checkpoint.npz"
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING and ckpt.exists())
    first = state(store, record.id)
    refused = pool_id("gcp", REGION, ZA, A3, Purchase.ON_DEMAND)
    assert first.pool_id == pool_id("gcp", REGION, ZB, A3, Purchase.ON_DEMAND)
    assert store.pool_health()[refused].health == "out-of-capacity"
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("capacity-error") < kinds.index("started")
    gang = vms.instances(job=record.id, attempt=str(first.attempt))
    assert len(gang) == 2 and {i["zone"].rsplit("/", 1)[-1] for i in gang} == {ZB}
    assert len(vms.instances(job=record.id)) == 2  # the refused attempt left nothing

    # The loop dies; a new loop with a new backend (same store and home) finds the gang running.
    backend = GcpBackend(conf, home=tmp_path, credentials=AnonymousCredentials())
    loop = fast_loop(tmp_path, store, backend)
    run_until(loop, lambda: loop.leader)
    after = state(store, record.id)
    assert (after.state, after.attempt) == (JobState.RUNNING, first.attempt)
    assert "requeued" not in [e.kind for e in store.events(job_id=record.id)]

    # A lost node: rank 1 is deleted outside overcast (someone in the console; a spot preemption)
    rank1 = next(i for i in gang if i["name"].endswith("-1"))
    gce.delete(ZB, rank1["name"])
    run_until(loop, lambda: state(store, record.id).state.terminal, timeout=40)
    final = state(store, record.id)
    assert (final.state, final.restarts, final.attempt) == (JobState.SUCCEEDED, 1, first.attempt + 1)
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("preempted") < kinds.index("requeued") < kinds.index("succeeded")
    consoles = [vms.console(name) for name in vms.booted() if name not in {i["name"] for i in gang}]
    results = [line for text in consoles for line in text.splitlines() if line.startswith("RESULT")]
    assert results == [reference_result(tmp_path / "ref", steps=150)] * 2
    resumed = [re.search(r"resumed from checkpoint at step (\d+)", text) for text in consoles]
    assert all(m and 0 < int(m[1]) < 150 for m in resumed), resumed  # from mid-run, not from the end
    assert all("head=10.128.0." in text for text in consoles)
    vms.wait_gone()
    ended = wait_events(
        backend, lambda _: not gce.listed() and not gce.policies, 10
    )  # deleted after the outcome
    assert ended == []
    assert backend.active() == [] and not gce.policies


def test_stop_gives_the_job_sigterm_through_the_agent_and_failures_and_preemptions_are_reported(
    gce: FakeGce,  # noqa: F811
    vms: GceVmEmulator,
    tmp_path: Path,
) -> None:
    backend = backend_of(gce, tmp_path)
    pool = pool_of(backend, ZB)
    saver = "trap 'echo saved; exit 143' TERM; echo ready; while true; do sleep 0.05; done"
    backend.launch(LaunchRequest("s", 1, pool, 2, gpu_job("s", saver)))
    backend.launch(LaunchRequest("f", 1, pool, 1, gpu_job("f", "exit 3", nodes=1)))
    backend.launch(LaunchRequest("p", 1, pool_of(backend, ZA, Purchase.SPOT), 1, gpu_job("p", saver, 1)))
    wanted = {("s", EventKind.STARTED), ("f", EventKind.FAILED), ("p", EventKind.STARTED)}
    events = poll_until(backend, wanted)
    failed = next(e for e in events if e.kind is EventKind.FAILED)
    assert failed.exit_code == 3 and "exited with 3" in failed.detail
    # STARTED means every agent is up, not that the job has set its trap yet
    ready = [i["name"] for i in vms.instances(job="s") + vms.instances(job="p")]
    assert eventually(lambda: all("ready" in vms.console(name) for name in ready))
    (spot,) = vms.instances(job="p")
    gce.preempt(spot["name"], notice=2.0)  # then GCP deletes the instance: it vanishes from the API
    (lost,) = poll_until(backend, {("p", EventKind.PREEMPTED)})
    assert lost.kind is EventKind.PREEMPTED  # SIGTERM at the notice, or the instance gone
    notice = vms.console(spot["name"])
    assert "stop requested (spot preemption): SIGTERM" in notice and "saved" in notice
    started = time.monotonic()
    backend.stop("s", 1, grace_seconds=15.0)
    assert time.monotonic() - started < 10  # the job saved and the agents stopped their instances
    gang = vms.instances(job="s")
    assert all(i["labels"].get("overcast-exit") == "143" for i in gang)
    assert all(i["labels"].get("overcast-sigterm") == "1" for i in gang)
    assert all("saved" in vms.console(i["name"]) for i in gang)
    assert backend.poll() == [] and backend.active() == []
    assert gce.authorized > 0  # the agents called the API with tokens from their metadata server


def test_a_gang_whose_agent_never_starts_fails_instead_of_running_forever(
    gce: FakeGce,  # noqa: F811
    vms: GceVmEmulator,
    tmp_path: Path,
) -> None:
    # an image without overcast: the startup script cannot start the agent, and the VM would bill forever
    backend = backend_of(gce, tmp_path, python="no-such-python3", agent_timeout_seconds=1.0)
    backend.launch(LaunchRequest("broken", 1, pool_of(backend, ZA), 1, gpu_job("b", "true", nodes=1)))
    events = poll_until(backend, {("broken", EventKind.FAILED)}, timeout=15)
    assert [(e.kind, e.detail) for e in events] == [(EventKind.FAILED, NO_AGENT)]  # never STARTED
    (instance,) = vms.instances(job="broken")
    assert "no-such-python3" in vms.console(instance["name"])
    backend.stop("broken", 1, grace_seconds=0.0)  # what the loop does after a failure
    assert backend.poll() == [] and backend.active() == []


def test_a_gcp_entry_of_the_fleet_file_runs_jobs_through_the_loop(
    gce_server: tuple[FakeGce, Path],  # noqa: F811
    gce: FakeGce,  # noqa: F811
    vms: GceVmEmulator,
    tmp_path: Path,
) -> None:
    key = gce_server[1]  # a service account key: the SDK sends self-signed JWTs
    text = f"""\
gcp:
  - name: usc
    project: {PROJECT}
    region: {REGION}
    zones: [{ZA}]
    machine_types: [{A3}]
    image: projects/overcast-test/global/images/gpu
    endpoint: {gce.endpoint}
    credentials_file: {key}
    max_nodes: 2
    logs_url: file://{tmp_path}/bucket
"""
    job = gpu_job("hello", "echo hello from $OVERCAST_NODE_RANK", 1)
    job_id = run_fleet_job(text, "gcp:usc", tmp_path, job, lambda s: s is not JobState.PENDING)
    (instance,) = [i for i in vms.instances() if items(i)["overcast-job"] == job_id] or [None]
    assert instance is not None and "hello from 0" in vms.console(instance["name"])
    uploaded = tmp_path / "bucket" / job_id / "1" / "node-0"  # the job's output, as the GCP agent shipped it
    assert (uploaded / "part-00000000").read_text() == "hello from 0\n"
    assert (uploaded / "end").read_text() == "1"
    assert gce.anonymous == 0  # the backend and the agents sent bearer tokens the fake issued


def test_fleet_entries_are_checked_with_file_and_line() -> None:
    text = f"""\
gcp:
  - name: usc
    project: {PROJECT}
    region: {REGION}
    zones: [us-east1-b]
    machine_types: [a3-highgpu-9g]
    image: projects/p/global/images/i
"""
    wrong = "fleet.yaml:6: gcp[0].machine_types: no GCP offer for machine type 'a3-highgpu-9g'"
    with pytest.raises(FleetError, match=re.escape(wrong)):
        parse_fleet(text, "fleet.yaml")
    fixed = text.replace("a3-highgpu-9g", A3)
    with pytest.raises(FleetError, match="zone 'us-east1-b' is not in region 'us-central1'"):
        parse_fleet(fixed, "fleet.yaml")


def test_setting_labels_rereads_when_someone_else_labelled_in_between(gce: FakeGce, tmp_path: Path) -> None:  # noqa: F811
    backend = backend_of(gce, tmp_path)
    backend.launch(LaunchRequest("l", 1, pool_of(backend, ZA), 1, gpu_job("l", "true", 1)))
    (inst,) = gce.listed()
    real_get, calls = backend.api["instances"].get, []

    def racing_get(*args: object, **kw: object) -> object:
        got = real_get(*args, **kw)
        if not calls:  # another writer labels the instance after our read
            calls.append(1)
            with gce.lock:
                live = gce.instance(ZA, inst["name"])
                gce.set_labels(ZA, inst["name"], {"labels": live["labels"] | {"overcast-agent": "up"},
                                                  "labelFingerprint": live["labelFingerprint"]})  # fmt: skip
        return got

    backend.api["instances"].get = racing_get
    (gang,) = backend._gangs()
    backend._ask_stop(gang)
    labels = gce.find(inst["name"])["labels"]
    assert labels["overcast-stop"] == "1" and labels["overcast-agent"] == "up"  # neither write was lost
