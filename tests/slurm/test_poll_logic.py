"""The backend's event logic for cases a real cluster produces only slowly or rarely (a requeue is not
eligible for 120 s, a job waits for hours, slurmctld forgets a job): a scripted queue behind stand-in
``squeue``/``scancel``/``sbatch`` commands, the same records ``squeue --json`` prints. No Slurm needed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from overcast.backends.base import CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.backends.slurm import SlurmBackend, SlurmCluster, slurm_cluster_from_fleet
from overcast.catalog.fleet import Cluster
from overcast.placement.pool import Pool, Purchase
from overcast.spec.models import AcceleratorRequest, Resources
from tests.slurm.helpers import shell_spec


class ScriptedSlurm:
    """A directory of stand-in Slurm commands: squeue prints queue.json, scancel logs its calls."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.jobs: list[dict[str, Any]] = []
        self.down = False
        commands = {
            "squeue": f'[ -f {root}/down ] && {{ echo "Unable to contact slurm controller" >&2; exit 1; }}\n'
            f"cat {root}/queue.json",
            "scancel": f'echo "$@" >> {root}/scancel.log',
        }
        for name, body in commands.items():
            path = self.bin / name
            path.write_text(f"#!/bin/bash\n{body}\n")
            path.chmod(0o755)
        self.publish()

    def job(self, slurm_id: int, name: str, state: str, **fields: Any) -> dict[str, Any]:
        record = {"job_id": slurm_id, "name": name, "job_state": state, "state_reason": "None"}
        record |= {"exit_code": 0, "restart_cnt": 0, "submit_time": 0, "nodes": "n[01-02]", **fields}
        self.jobs = [j for j in self.jobs if j["job_id"] != slurm_id] + [record]
        self.publish()
        return record

    def publish(self) -> None:
        (self.root / "queue.json").write_text(json.dumps({"errors": [], "jobs": self.jobs}))
        (self.root / "down").unlink(missing_ok=True)
        if self.down:
            (self.root / "down").write_text("")

    def cancelled(self) -> list[str]:
        log = self.root / "scancel.log"
        return log.read_text().split() if log.exists() else []


@pytest.fixture
def slurm(tmp_path: Path) -> ScriptedSlurm:
    return ScriptedSlurm(tmp_path / "slurm")


def backend(slurm: ScriptedSlurm, now: list[float], **settings: Any) -> SlurmBackend:
    cluster = SlurmCluster(
        "c", work_dir=str(slurm.root / "work"), down_retry_s=0, queue_query="json", **settings
    )
    b = SlurmBackend(cluster, clock=lambda: now[0])
    b.cli = type(b.cli)(timeout_s=5, bin_dir=str(slurm.bin))
    return b


def kinds(events: list) -> list[tuple[EventKind, str, int]]:  # type: ignore[type-arg]
    return [(e.kind, e.job_id, e.attempt) for e in events]


def test_a_job_waiting_too_long_is_a_capacity_error_and_is_cancelled(slurm: ScriptedSlurm) -> None:
    now = [1000.0]
    b = backend(slurm, now, pending_timeout_s=60)
    slurm.job(7, "ovc.1.wait", "PENDING", state_reason="Resources", submit_time=990)
    assert b.poll() == []
    now[0] = 1051.0
    events = b.poll()
    assert kinds(events) == [(EventKind.CAPACITY_ERROR, "wait", 1)]
    assert "still pending after 61s (Resources)" in events[0].detail
    assert slurm.cancelled() == ["7"]
    slurm.job(7, "ovc.1.wait", "CANCELLED")
    assert b.poll() == []  # its cancellation is ours: no second event


def test_a_job_slurmctld_forgets_is_reported_lost(slurm: ScriptedSlurm) -> None:
    now = [0.0]
    b = backend(slurm, now)
    slurm.job(8, "ovc.2.gone", "RUNNING")
    assert kinds(b.poll()) == [(EventKind.STARTED, "gone", 2)]
    slurm.jobs = []
    slurm.publish()
    events = b.poll()
    assert kinds(events) == [(EventKind.PREEMPTED, "gone", 2)]
    assert "vanished" in events[0].detail


def test_an_end_carries_slurms_end_time_not_the_poll_time(slurm: ScriptedSlurm) -> None:
    now = [1_800_000_000.0]
    b = backend(slurm, now)
    slurm.job(7, "ovc.1.done", "RUNNING", end_time=1_800_086_400)  # a live job's end_time: its time limit
    slurm.job(8, "ovc.1.ahead", "RUNNING")
    assert [e.at for e in b.poll()] == [now[0], now[0]]  # STARTED: seen now
    slurm.job(7, "ovc.1.done", "COMPLETED", end_time=1_800_000_600)
    slurm.job(8, "ovc.1.ahead", "FAILED", exit_code=256, end_time=1_800_090_000)  # slurmctld's clock ahead
    now[0] += 3600  # the loop was away for an hour
    assert [(e.kind, e.at) for e in b.poll()] == [
        (EventKind.SUCCEEDED, 1_800_000_600),
        (EventKind.FAILED, now[0]),  # never later than now
    ]


def _sacct(slurm: ScriptedSlurm, lines: str) -> None:
    path = slurm.bin / "sacct"
    path.write_text(f"#!/bin/bash\necho \"$@\" >> {slurm.root}/sacct.log\ncat <<'EOF'\n{lines}\nEOF\n")
    path.chmod(0o755)


def test_a_forgotten_job_ends_as_and_when_accounting_says(slurm: ScriptedSlurm) -> None:
    now = [0.0]
    b = backend(slurm, now)
    for slurm_id, name in ((8, "ovc.2.ok"), (9, "ovc.1.bad"), (10, "ovc.1.odd")):
        slurm.job(slurm_id, name, "RUNNING")
    b.poll()
    slurm.jobs = []
    slurm.publish()
    ended = time.mktime(time.strptime("2026-11-26T08:19:02", "%Y-%m-%dT%H:%M:%S"))
    now[0] = ended + 7200  # away for two hours: slurmctld forgot them (MinJobAge)
    lines = "8|COMPLETED|2026-11-26T08:19:02|0:0\n9|FAILED|2026-11-26T08:19:02|3:0\n10|RUNNING|Unknown|0:0"
    _sacct(slurm, lines)
    events = b.poll()
    assert [(e.kind, e.job_id, e.at, e.exit_code) for e in events] == [
        (EventKind.SUCCEEDED, "ok", ended, 0),
        (EventKind.FAILED, "bad", ended, 3),
        (EventKind.PREEMPTED, "odd", now[0], None),  # accounting does not know it ended: lost
    ]
    assert (slurm.root / "sacct.log").read_text().split()[-1] == "8,9,10"


def test_a_short_outage_is_not_a_lost_cluster(slurm: ScriptedSlurm) -> None:
    now = [0.0]
    b = backend(slurm, now, lost_after_s=60)
    slurm.job(9, "ovc.1.a", "RUNNING")
    assert kinds(b.poll()) == [(EventKind.STARTED, "a", 1)]
    slurm.down = True  # slurmctld restarts; the job keeps running on its nodes
    slurm.publish()
    now[0] = 30.0
    assert b.poll() == []
    slurm.down = False
    slurm.publish()
    now[0] = 59.0
    assert b.poll() == []  # back within the minute: nothing happened
    slurm.down = True
    slurm.publish()
    now[0] = 70.0
    assert b.poll() == []  # a new outage starts its own clock
    now[0] = 131.0
    assert kinds(b.poll()) == [(EventKind.PROVIDER_DOWN, "a", 1)]


def test_provider_down_once_then_the_old_attempt_is_cancelled_when_the_cluster_is_back(
    slurm: ScriptedSlurm,
) -> None:
    now = [0.0]
    b = backend(slurm, now, lost_after_s=0)
    slurm.job(9, "ovc.1.a", "RUNNING")
    slurm.job(10, "ovc.1.b", "PENDING")
    b.poll()
    slurm.down = True
    slurm.publish()
    assert sorted(kinds(b.poll())) == [(EventKind.PROVIDER_DOWN, "a", 1), (EventKind.PROVIDER_DOWN, "b", 1)]
    assert b.poll() == []  # said once
    slurm.down = False
    slurm.publish()
    assert b.poll() == []  # back: the loop has moved both jobs elsewhere, so no news ...
    assert sorted(slurm.cancelled()) == ["10", "9"]  # ... and they must not run twice


@pytest.mark.parametrize("requeue", [False, True])
def test_a_slurm_requeue_ends_the_attempt_unless_requeue_is_allowed(
    slurm: ScriptedSlurm, requeue: bool
) -> None:
    now = [0.0]
    b = backend(slurm, now, requeue=requeue)
    slurm.job(11, "ovc.1.rq", "RUNNING")
    assert kinds(b.poll()) == [(EventKind.STARTED, "rq", 1)]
    slurm.job(11, "ovc.1.rq", "PENDING", state_reason="BeginTime", restart_cnt=1)
    events = b.poll()
    if requeue:  # Slurm restarts it in place, same attempt: it will say STARTED again
        assert events == [] and slurm.cancelled() == []
        slurm.job(11, "ovc.1.rq", "RUNNING", restart_cnt=1)
        assert kinds(b.poll()) == [(EventKind.STARTED, "rq", 1)]
    else:  # overcast owns restarts: this attempt is over, relaunch wherever is best
        assert kinds(events) == [(EventKind.PREEMPTED, "rq", 1)] and slurm.cancelled() == ["11"]


def test_a_job_slurm_requeued_in_place_waits_its_own_pending_timeout(slurm: ScriptedSlurm) -> None:
    now = [0.0]
    b = backend(slurm, now, requeue=True, pending_timeout_s=60)
    slurm.job(13, "ovc.1.long", "RUNNING")
    assert kinds(b.poll()) == [(EventKind.STARTED, "long", 1)]
    now[0] = 1000.0  # it ran for a while, then lost a node: Slurm requeues it
    slurm.job(13, "ovc.1.long", "PENDING", state_reason="BeginTime", restart_cnt=1)
    assert b.poll() == []
    now[0] = 1050.0
    assert b.poll() == []  # waiting 50 s since the requeue, not 1050 s since the submission
    now[0] = 1061.0
    assert kinds(b.poll()) == [(EventKind.CAPACITY_ERROR, "long", 1)]


def test_a_job_whose_sbatch_answer_was_lost_is_cancelled_when_it_shows_up(slurm: ScriptedSlurm) -> None:
    b = backend(slurm, [0.0])
    b.cli = type(b.cli)(timeout_s=0.5, bin_dir=str(slurm.bin))
    (slurm.bin / "sbatch").write_text("#!/bin/bash\nsleep 5\necho 42\n")  # slurmctld took it, too slowly
    (slurm.bin / "sbatch").chmod(0o755)
    pool = Pool("slurm/c", "c", "c", "c", "gpu/h100x8", "H100", 8, Purchase.RESERVED, 10.0, 8, 0, "slurm:c",
                labels={"gres_type": "h100"})  # fmt: skip
    with pytest.raises(ProviderDown, match="did not answer"):
        b.launch(LaunchRequest("ghost", 1, pool, 1, shell_spec("ghost", "true")))
    slurm.job(42, "ovc.1.ghost", "RUNNING")  # the loop has relaunched it as attempt 2, elsewhere
    assert b.poll() == [] and slurm.cancelled() == ["42"]


def test_active_lists_live_overcast_jobs_of_this_prefix_and_ends_not_yet_reported(
    slurm: ScriptedSlurm,
) -> None:
    b = backend(slurm, [0.0])
    slurm.job(1, "ovc.1.live", "RUNNING")
    slurm.job(2, "ovc.3.queued", "PENDING")
    slurm.job(3, "ovc.1.done", "COMPLETED")
    slurm.job(4, "someone-elses-job", "RUNNING")
    slurm.job(5, "other.1.prefix", "RUNNING")
    slurm.job(6, "ovc.1.stopped", "CANCELLED")
    b.stop("stopped", 1, grace_seconds=0)  # overcast's own cancel: its end is not news
    assert b.active() == [("done", 1), ("live", 1), ("queued", 3)]  # "done": its end is news until polled
    assert kinds(b.poll()) == [(EventKind.STARTED, "live", 1), (EventKind.SUCCEEDED, "done", 1)]
    assert b.active() == [("live", 1), ("queued", 3)]
    slurm.job(1, "ovc.1.live", "NODE_FAIL", state_reason="NodeDown")
    assert b.active() == [("live", 1), ("queued", 3)]  # a reconcile before the next poll: still running
    assert kinds(b.poll()) == [(EventKind.PREEMPTED, "live", 1)]
    assert b.active() == [("queued", 3)]


def test_a_job_that_ended_while_no_overcast_watched_is_reported_once(slurm: ScriptedSlurm) -> None:
    slurm.job(7, "ovc.2.fin", "COMPLETED")
    slurm.job(8, "ovc.1.bad", "FAILED", state_reason="NonZeroExitCode", exit_code=768)
    fresh = backend(slurm, [0.0])  # a new process: it must not let the loop rerun a finished job
    events = fresh.poll()
    assert kinds(events) == [(EventKind.SUCCEEDED, "fin", 2), (EventKind.FAILED, "bad", 1)]
    assert events[1].exit_code == 3
    assert fresh.poll() == [] and fresh.active() == []


def test_a_state_the_backend_does_not_know_is_not_the_end(slurm: ScriptedSlurm) -> None:
    b = backend(slurm, [0.0])
    slurm.job(12, "ovc.1.odd", "RUNNING")
    assert kinds(b.poll()) == [(EventKind.STARTED, "odd", 1)]
    slurm.job(12, "ovc.1.odd", "RECONFIG_FAIL")  # a flag squeue may print as the state
    assert b.poll() == [] and b.active() == [("odd", 1)]  # still ours to watch: not lost, not ended
    slurm.job(12, "ovc.1.odd", "COMPLETED")
    assert kinds(b.poll()) == [(EventKind.SUCCEEDED, "odd", 1)]


def test_events_the_caller_could_not_handle_are_delivered_again(slurm: ScriptedSlurm) -> None:
    b = backend(slurm, [0.0])
    slurm.job(9, "ovc.1.r", "RUNNING")
    first = b.poll()
    assert kinds(first) == [(EventKind.STARTED, "r", 1)]
    slurm.job(9, "ovc.1.r", "COMPLETED")
    b.redeliver()
    assert kinds(b.poll()) == [(EventKind.STARTED, "r", 1), (EventKind.SUCCEEDED, "r", 1)]
    assert b.poll() == []


def test_launch_submits_the_gang_with_the_pools_partition_and_gres(slurm: ScriptedSlurm) -> None:
    b = backend(slurm, [0.0], time_limit_minutes=90)
    calls = slurm.root / "sbatch.args"
    (slurm.bin / "sbatch").write_text(f'#!/bin/bash\necho "$@" > {calls}\necho 42\n')
    (slurm.bin / "sbatch").chmod(0o755)
    pool = Pool("slurm/c", "c", "c", "c", "gpu/h100x8", "H100", 8, Purchase.RESERVED, 10.0, 8, 0, "slurm:c",
                labels={"partition": "gpu", "gres_type": "h100"})  # fmt: skip
    spec = shell_spec("gang", "true", nodes=4)
    allocation = b.launch(LaunchRequest("gang", 2, pool, 4, spec, {"OVERCAST_CHECKPOINT_DIR": "s3://b/ck"}))
    assert allocation.handle == "c:42"
    args = calls.read_text().split()
    for expected in ("--job-name=ovc.2.gang", "--nodes=4", "--exclusive", "--no-requeue", "--partition=gpu",
                     "--gres=gpu:h100:8", "--time=90", "--ntasks-per-node=1"):  # fmt: skip
        assert expected in args
    batch = Path(args[-1]).read_text()
    assert "export OVERCAST_CHECKPOINT_DIR=s3://b/ck" in batch and "export OVERCAST_ATTEMPT=2" in batch
    a100 = spec.model_copy(
        update={"resources": Resources(accelerators=(AcceleratorRequest(name="A100", count=8),))}
    )
    with pytest.raises(CapacityError, match="has H100 GPUs; the job asks for A100:8"):
        b.launch(LaunchRequest("other", 1, pool, 4, a100))
    assert not b.attempt_dir("other", 1).exists()
    with pytest.raises(ValueError, match="belongs to backend"):
        b.launch(
            LaunchRequest("x", 1, Pool("p", "p", "r", None, "t", "H100", 8, Purchase.SPOT, 1.0), 1, spec)
        )


def test_a_fleet_files_slurm_cluster_becomes_backend_settings(tmp_path: Path) -> None:
    fleet = Cluster(name="oci-hpc", slurm={"conf": "/etc/slurm/oci.conf", "partition": "gpu"}, nodes=8,
                    gpus_per_node=8, accelerator="H100", price_per_gpu_hour=2.0)  # fmt: skip
    cluster = slurm_cluster_from_fleet(fleet, tmp_path)
    assert (cluster.name, cluster.conf, cluster.partitions) == ("oci-hpc", "/etc/slurm/oci.conf", ("gpu",))
    assert (cluster.price_per_node_hour, cluster.accelerator_names) == (16.0, {"h100": "H100"})
    b = SlurmBackend(cluster)
    assert b.name == fleet.backend == "slurm:oci-hpc"
    assert (
        b.log_path("job-1", 3, 1) == tmp_path / "logs" / "job-1" / "3" / "node-1.log"
    )  # where the API looks
