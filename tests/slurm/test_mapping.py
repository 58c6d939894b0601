"""Slurm records -> overcast events and pools, and the command layer's error handling (no Slurm needed).

Job and node records have the shape ``squeue --json`` / ``sinfo --json`` print in Slurm 22.05.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from overcast.backends.base import EventKind
from overcast.backends.slurm import SlurmBackend, SlurmCluster
from overcast.backends.slurm_cli import SlurmCommands, SlurmError, SlurmUnreachable, decode_exit_status
from overcast.backends.slurm_pools import parse_gpu_gres, pools_from_nodes
from overcast.backends.slurm_script import batch_script
from overcast.backends.slurm_states import (
    end_time,
    hopeless_reason,
    is_live,
    terminal_outcome,
    was_requeued,
)


def job(state: str, exit_code: int = 0, reason: str = "None", restarts: int = 0) -> dict[str, Any]:
    return {"job_state": state, "exit_code": exit_code, "state_reason": reason, "restart_cnt": restarts}


@pytest.mark.parametrize(
    ("state", "status", "kind", "exit_code"),
    [
        ("COMPLETED", 0, EventKind.SUCCEEDED, 0),
        ("FAILED", 768, EventKind.FAILED, 3),  # Slurm reports the wait status: 3 << 8
        ("OUT_OF_MEMORY", 9, EventKind.FAILED, 137),
        ("TIMEOUT", 15, EventKind.PREEMPTED, None),  # the site's limit: go on from the checkpoint
        ("NODE_FAIL", 15, EventKind.PREEMPTED, None),
        ("PREEMPTED", 15, EventKind.PREEMPTED, None),
        ("BOOT_FAIL", 0, EventKind.PREEMPTED, None),
        ("CANCELLED", 15, EventKind.PREEMPTED, None),  # by an admin, not by overcast
    ],
)
def test_finished_states_map_to_who_is_at_fault(
    state: str, status: int, kind: EventKind, exit_code: int | None
) -> None:
    outcome = terminal_outcome(job(state, status), stopped_by_us=False)
    assert outcome is not None
    assert (outcome.kind, outcome.exit_code) == (kind, exit_code)


@pytest.mark.parametrize(
    "state",
    [
        "PENDING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "STOPPED",
        "CONFIGURING",
        "REQUEUE_HOLD",
        "RESV_DEL_HOLD",
    ],
)
def test_unfinished_states_are_live_and_not_events(state: str) -> None:
    assert is_live(job(state))  # listed by active(); it keeps its nodes or its place in the queue
    assert terminal_outcome(job(state), stopped_by_us=False) is None


@pytest.mark.parametrize("state", ["CANCELLED", "COMPLETED", "FAILED", "NODE_FAIL"])
def test_the_end_of_a_job_overcast_stopped_is_not_news(state: str) -> None:
    assert terminal_outcome(job(state), stopped_by_us=True) is None


def test_pending_reasons_that_never_clear_are_hopeless() -> None:
    assert hopeless_reason(job("PENDING", reason="PartitionNodeLimit")) == "PartitionNodeLimit"
    assert hopeless_reason(job("PENDING", reason="PartitionConfig")) == "PartitionConfig"
    assert hopeless_reason(job("PENDING", reason="AssocMaxGRESPerJob")) == "AssocMaxGRESPerJob"
    for waiting in ("Resources", "Priority", "BeginTime", "None", "ReqNodeNotAvail", "QOSGrpGRES"):
        assert hopeless_reason(job("PENDING", reason=waiting)) is None
    assert hopeless_reason(job("RUNNING", reason="PartitionConfig")) is None


def test_requeue_is_seen_by_state_or_restart_count() -> None:
    assert was_requeued(job("REQUEUED"), restarts_seen=0)
    assert was_requeued(job("PENDING", restarts=1), restarts_seen=0)
    assert not was_requeued(job("PENDING", restarts=1), restarts_seen=1)


def test_exit_status_decoding() -> None:
    assert [decode_exit_status(s) for s in (0, 256, 768, 9, 15, None)] == [0, 1, 3, 137, 143, None]


def test_gres_parsing() -> None:
    assert parse_gpu_gres("gpu:h100:8(S:0-1)") == parse_gpu_gres("gpu:h100:8")
    assert (parse_gpu_gres("gpu:h100:8").type, parse_gpu_gres("gpu:h100:8").count) == ("h100", 8)
    assert (parse_gpu_gres("shard:4,gpu:2").type, parse_gpu_gres("shard:4,gpu:2").count) == ("", 2)
    assert parse_gpu_gres("").count == parse_gpu_gres("(null)").count == 0


def node(name: str, state: str = "idle", flags: tuple[str, ...] = (), partitions: tuple[str, ...] = ("gpu",)):
    return {
        "name": name,
        "state": state,
        "state_flags": list(flags),
        "partitions": list(partitions),
        "gres": "gpu:h100:8",
        "cpus": 64,
        "real_memory": 512000,
    }


def test_pools_count_usable_nodes_and_busy_ones() -> None:
    nodes = [
        node("n1", "allocated"),
        node("n2", "mixed"),
        node("n3", "idle"),
        node("n4", "idle", flags=("DRAIN",)),
        node("n5", "down"),
        node("n6", "idle", flags=("NOT_RESPONDING",)),
        node("n7", "idle", flags=("COMPLETING",)),
    ]
    (pool,) = pools_from_nodes(nodes, cluster="c", provider="p", region="r", price_per_node_hour=10.0)
    assert (pool.id, pool.backend, pool.accelerator, pool.gpus_per_node) == ("slurm/c", "slurm:c", "H100", 8)
    assert (pool.capacity_nodes, pool.used_nodes, pool.free_nodes) == (4, 3, 1)
    assert (pool.marginal_price_per_node_hour, pool.price_per_node_hour) == (0.0, 10.0)
    assert pool.labels == {"cluster": "c", "partition": "gpu", "gres_type": "h100"}


def test_several_partitions_are_several_pools() -> None:
    nodes = [node("a1", partitions=("gpu", "debug")), node("a2", partitions=("gpu",))]
    pools = pools_from_nodes(nodes, cluster="c", provider="p", region="r", price_per_node_hour=1.0)
    assert {(p.id, p.capacity_nodes) for p in pools} == {("slurm/c/debug", 1), ("slurm/c/gpu", 2)}
    only = pools_from_nodes(
        nodes, cluster="c", provider="p", region="r", price_per_node_hour=1.0, partitions=("debug",)
    )
    assert [p.id for p in only] == ["slurm/c"]


def test_job_names_encode_job_id_and_attempt() -> None:
    backend = SlurmBackend(SlurmCluster("oci-hpc", job_prefix="ovc"))
    name = backend.job_name("train.v2/a b", 12)
    assert name == "ovc.12.train.v2/a b"
    assert backend.parse_job_name(name) == ("train.v2/a b", 12)
    assert backend.parse_job_name("other.1.x") is None
    assert backend.attempt_dir("train.v2/a b", 12).parts[-2:] == ("train.v2_a_b", "attempt-12")


def test_cluster_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="cluster name"):
        SlurmCluster("oci hpc")
    with pytest.raises(ValueError, match="price_per_node_hour"):
        SlurmCluster("oci", price_per_node_hour=-1)


def test_batch_script_exports_survive_shell_quoting(tmp_path: Path) -> None:
    env = {"OVERCAST_JOB_ID": "it's $HOME `x`", "EMPTY": ""}
    script = batch_script(tmp_path, env)
    exports = "\n".join(line for line in script.splitlines() if line.startswith("export ") and "=" in line)
    exports = "\n".join(line for line in exports.splitlines() if "SLURM" not in line and "addr" not in line)
    shown = subprocess.run(["bash", "-c", exports + '\nprintf "%s|%s" "$OVERCAST_JOB_ID" "$EMPTY"'],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert shown.stdout == "it's $HOME `x`|"
    with pytest.raises(ValueError, match="not a valid shell name"):
        batch_script(tmp_path, {"BAD-NAME": "x"})


def fake_bin(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)
    return str(tmp_path)


def test_a_command_that_hangs_or_cannot_reach_slurmctld_is_unreachable(tmp_path: Path) -> None:
    slow = SlurmCommands(timeout_s=0.3, bin_dir=fake_bin(tmp_path, "squeue", "sleep 5"))
    with pytest.raises(SlurmUnreachable, match=r"did not answer within 0\.3s"):
        slow.squeue()
    refused = (
        "echo 'sbatch: error: Batch job submission failed: Unable to contact slurm controller' >&2; exit 1"
    )
    down = SlurmCommands(bin_dir=fake_bin(tmp_path, "sbatch", refused))
    with pytest.raises(SlurmUnreachable, match="Unable to contact"):
        down.sbatch("job.sh", [])
    rejected = "echo 'sbatch: error: invalid partition specified: nope' >&2; exit 1"
    with pytest.raises(SlurmError, match="invalid partition"):
        SlurmCommands(bin_dir=fake_bin(tmp_path, "sbatch", rejected)).sbatch("job.sh", [])
    errors = """echo '{"errors": [{"description": "Failed while looking for jobs"}], "jobs": []}'"""
    with pytest.raises(SlurmUnreachable, match="Failed while looking"):
        SlurmCommands(bin_dir=fake_bin(tmp_path, "squeue", errors)).squeue()
    missing = SlurmCommands(bin_dir=str(tmp_path / "nowhere"))
    with pytest.raises(SlurmUnreachable, match="is Slurm installed"):
        missing.sinfo_nodes()


def test_a_cluster_that_does_not_answer_is_down_without_asking_again(tmp_path: Path) -> None:
    now = [1000.0]
    backend = SlurmBackend(SlurmCluster("lost", down_retry_s=5.0), clock=lambda: now[0])
    calls = tmp_path / "calls"
    backend.cli = SlurmCommands(
        timeout_s=0.2, bin_dir=fake_bin(tmp_path, "squeue", f"echo x >> {calls}; sleep 5")
    )
    assert backend.poll() == []
    assert not backend.reachable
    assert backend.poll() == [] and calls.read_text().count("x") == 1  # within down_retry_s: not asked
    now[0] += 6
    backend.poll()
    assert calls.read_text().count("x") == 2


def test_the_text_queue_gives_the_same_records_as_json(tmp_path: Path) -> None:
    lines = [
        "7|FAILED|NonZeroExitCode|768|0|2026-11-26T08:17:47|2026-11-26T08:19:02|n01|ovc.1.a job|with pipe",
        "8|PENDING|Resources|0|2|2026-11-26T08:17:48|Unknown||ovc.2.b",
        "garbage line",
    ]
    body = "cat <<'EOF'\n" + "\n".join(lines) + "\nEOF"
    jobs = SlurmCommands(bin_dir=fake_bin(tmp_path, "squeue", body)).squeue_text()
    assert [(j["job_id"], j["name"], j["job_state"], j["restart_cnt"]) for j in jobs] == [
        (7, "ovc.1.a job|with pipe", "FAILED", 0),
        (8, "ovc.2.b", "PENDING", 2),
    ]
    outcome = terminal_outcome(jobs[0], stopped_by_us=False)
    assert outcome is not None and (outcome.kind, outcome.exit_code) == (EventKind.FAILED, 3)
    assert hopeless_reason(jobs[1]) is None and was_requeued(jobs[1], restarts_seen=0)
    assert jobs[1]["submit_time"] - jobs[0]["submit_time"] == 1
    assert end_time(jobs[0]) == jobs[0]["submit_time"] + 75 and end_time(jobs[1]) is None


def test_newer_slurm_json_shapes_are_understood() -> None:  # Slurm 23.02+: state lists, exit code objects
    record = {"job_state": ["NODE_FAIL"], "exit_code": {"return_code": 0, "signal": {"id": 15}}}
    outcome = terminal_outcome(record, stopped_by_us=False)
    assert outcome is not None and outcome.kind is EventKind.PREEMPTED
    assert decode_exit_status({"return_code": 3, "signal": {"id": 0}}) == 3
    assert end_time({"end_time": {"set": True, "infinite": False, "number": 1_800_000_000}}) == 1.8e9
    assert end_time({"end_time": {"set": False, "infinite": False, "number": 0}}) is None
    assert end_time({"end_time": 1_800_000_000}) == 1.8e9 and end_time({"end_time": 0}) is None


def test_slurm_that_cannot_run_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.slurm import _unavailable

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not root"):
        _unavailable("not root")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Slurm tests cannot run under CI: not root"):
        _unavailable("not root")
