"""The Slurm backend against two real local Slurm clusters: pools, the job contract, stop, reconcile."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from overcast.backends.base import EventKind
from overcast.backends.slurm import SlurmBackend
from overcast.placement.pool import Health, Purchase
from tests.fixtures.slurm import LocalSlurm
from tests.slurm.helpers import (
    Events,
    node_log,
    pool_of,
    reference_result,
    request,
    shell_spec,
    train_spec,
    wait_until,
)

pytestmark = pytest.mark.slurm


def test_pools_read_nodes_gpus_and_use_from_each_cluster(slurm_backends: dict[str, SlurmBackend]) -> None:
    oci, azure = slurm_backends["oci-hpc"], slurm_backends["azure-hpc"]
    pools = {p.backend: p for b in (oci, azure) for p in b.pools()}
    assert set(pools) == {"slurm:oci-hpc", "slurm:azure-hpc"}
    for name, nodes, price in (("oci-hpc", 8, 16.0), ("azure-hpc", 4, 24.0)):
        pool = pools[f"slurm:{name}"]
        assert (pool.id, pool.provider, pool.purchase) == (f"slurm/{name}", name, Purchase.RESERVED)
        assert (pool.accelerator, pool.gpus_per_node, pool.capacity_nodes) == ("H100", 8, nodes)
        assert (pool.used_nodes, pool.price_per_node_hour, pool.health) == (0, price, Health.OK)


def test_two_node_job_gets_the_overcast_contract_on_every_node(
    slurm_backends: dict[str, SlurmBackend], tmp_path: Path
) -> None:
    oci = slurm_backends["oci-hpc"]
    spec = train_spec("contract", nodes=2, ckpt=tmp_path / "ckpt", steps=60, step_seconds=0.02)
    allocation = oci.launch(request(oci, "contract", 1, spec))
    assert allocation.handle.startswith("oci-hpc:")
    events = Events([oci])
    started = events.wait(EventKind.STARTED, "contract", 1)
    assert started.detail.startswith("running on ocihpc")
    assert pool_of(oci).used_nodes == 2  # read back from sinfo while it runs
    assert oci.active() == [("contract", 1)]
    done = events.wait(EventKind.SUCCEEDED, "contract", 1)
    assert done.exit_code == 0
    result = reference_result(tmp_path / "ref", steps=60)
    for rank in (0, 1):
        log = node_log(oci, "contract", 1, rank)
        assert f"job=contract attempt=1 rank={rank}/2 head=127.0.0.1 gpus=0,1,2,3,4,5,6,7" in log
        assert result in log
    assert oci.active() == []


def test_stop_sends_sigterm_waits_for_the_checkpoint_then_cleans_up(
    slurm_backends: dict[str, SlurmBackend], slurm_clusters: dict[str, LocalSlurm], tmp_path: Path
) -> None:
    azure = slurm_backends["azure-hpc"]
    spec = train_spec("stopme", nodes=2, ckpt=tmp_path / "ckpt", steps=10_000, step_seconds=0.02)
    azure.launch(request(azure, "stopme", 1, spec))
    events = Events([azure])
    events.wait(EventKind.STARTED, "stopme", 1)
    # The trainer handles SIGTERM once it runs steps (it checkpoints from step 10 on).
    wait_until(lambda: (tmp_path / "ckpt" / "checkpoint.npz").exists(), what="trainer running")
    azure.stop("stopme", 1, grace_seconds=10)
    assert "SIGTERM: saved at step" in node_log(azure, "stopme", 1, 0)
    assert (tmp_path / "ckpt" / "checkpoint.npz").exists()
    slurm_id = azure.slurm_job_id("stopme", 1)
    squeue = slurm_clusters["azure-hpc"].command("squeue", "-h", "-j", str(slurm_id), "-o", "%T")
    assert squeue.strip() in ("", "COMPLETED", "CANCELLED", "FAILED")  # nothing left running
    assert azure.active() == []
    events.poll()
    assert events.kinds("stopme") == [(EventKind.STARTED, 1)]  # a stop we asked for is not news


def test_a_restarted_backend_finds_its_jobs_by_name_and_can_stop_them(
    slurm_backends: dict[str, SlurmBackend], tmp_path: Path
) -> None:
    oci = slurm_backends["oci-hpc"]
    spec = train_spec("crash", nodes=1, ckpt=tmp_path / "ckpt", steps=10_000)
    oci.launch(request(oci, "crash", 3, spec))
    Events([oci]).wait(EventKind.STARTED, "crash", 3)
    # The control loop crashed and came back: no memory of the job. (It reads the queue as text here.)
    assert oci.cluster.queue_query == "json"
    fresh = SlurmBackend(dataclasses.replace(oci.cluster, queue_query="text"))
    assert fresh.active() == [("crash", 3)]
    assert [(e.kind, e.job_id, e.attempt) for e in fresh.poll()] == [(EventKind.STARTED, "crash", 3)]
    fresh.stop("crash", 3, grace_seconds=0)
    wait_until(lambda: fresh.active() == [], timeout=15, what="job gone from squeue")


def test_a_job_never_inherits_overcasts_secrets(
    slurm_backends: dict[str, SlurmBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERCAST_TOKEN", "oc_secret")
    monkeypatch.setenv("OVERCAST_DATABASE_URL", "postgresql+psycopg://u:pw@db/x")
    oci = slurm_backends["oci-hpc"]
    spec = shell_spec("env", 'echo "[$OVERCAST_TOKEN][$OVERCAST_DATABASE_URL][$OVERCAST_JOB_ID]"')
    oci.launch(request(oci, "env", 1, spec))
    Events([oci]).wait(EventKind.SUCCEEDED, "env", 1)
    assert "[][][env]" in node_log(oci, "env", 1, 0)


def test_an_end_carries_slurms_end_time_not_the_poll_time(
    slurm_backends: dict[str, SlurmBackend], tmp_path: Path
) -> None:
    # oci-hpc reads the queue as JSON, azure-hpc as text (squeue -O): both give the End slurmctld recorded.
    for cluster, code, kind in (("oci-hpc", 0, EventKind.SUCCEEDED), ("azure-hpc", 3, EventKind.FAILED)):
        backend, stamp = slurm_backends[cluster], tmp_path / f"{cluster}.end"
        backend.launch(
            request(backend, "ends", 1, shell_spec("ends", f"sleep 1; date +%s.%N > {stamp}; exit {code}"))
        )
        wait_until(stamp.exists, what=f"the job on {cluster} ended")
        time.sleep(3.5)  # nobody polls (the control loop is away)
        done = Events([backend]).wait(kind, "ends", 1)
        polled = time.time()
        assert abs(done.at - float(stamp.read_text())) < 1.5  # Slurm keeps whole seconds
        assert polled - done.at > 2.5
