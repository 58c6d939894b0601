"""The issue's must-show, as a user runs it: `overcast up --fleet` over two real Slurm clusters, then
`overcast launch`. The 2-node training job is visible in `squeue` and `overcast status`, loses a node on
oci-hpc, resumes on azure-hpc from its checkpoint and ends with the uninterrupted run's RESULT line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.slurm import LocalSlurm, reset_cluster
from tests.slurm.helpers import ROOT, TRAIN, reference_result

pytestmark = pytest.mark.slurm

STEPS = 150
PRICES = {"oci-hpc": 2.0, "azure-hpc": 3.0}  # $/GPU-hour: oci-hpc is the cheaper, so it is tried first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check: Callable[[], object], timeout: float, log: Path) -> object:
    """``check()``'s first truthy value within ``timeout`` seconds; else fail with the server's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout}s; overcast up said:\n{log.read_text()[-3000:]}")


class Overcast:
    """The `overcast` command against one `overcast up` server, as a user would run it."""

    def __init__(self, home: Path, port: int) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCAST_")}
        self.env |= {"OVERCAST_HOME": str(home), "OVERCAST_API_URL": f"http://127.0.0.1:{port}"}
        self.env["COLUMNS"] = "200"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "overcast.cli.main", *args],
            capture_output=True, text=True, timeout=30, env=self.env, stdin=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"overcast {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def job(self, job_id: str) -> dict[str, str]:
        """`overcast status JOB`: one "key value" line per field."""
        lines = self("status", job_id).stdout.splitlines()
        pairs = (line.split(maxsplit=1) for line in lines if line.strip())
        return {key: value.strip() for key, value in pairs}


@pytest.fixture
def overcast_up(slurm_clusters: dict[str, LocalSlurm], tmp_path: Path) -> Iterator[tuple[Overcast, Path]]:
    """`overcast up --fleet` over the fixture's clusters, in its own process; stopped by PID afterwards,
    and every job it left on the clusters cancelled."""
    shape = {"gpus_per_node": 8, "accelerator": "H100"}
    clusters = [
        {"name": c.name, "slurm": {"conf": c.conf}, "nodes": c.nodes, "price_per_gpu_hour": PRICES[c.name]}
        | shape
        for c in slurm_clusters.values()
    ]
    fleet = {"clusters": clusters}
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    home, port, log = tmp_path / "home", _free_port(), tmp_path / "up.log"
    cli = Overcast(home, port)
    args = ["up", "--fleet", str(tmp_path / "fleet.yaml"), "--port", str(port), "--grace", "2"]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "overcast.cli.main", *args, "--interval", "0.2"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=cli.env, cwd=ROOT,
        )  # fmt: skip
    try:
        _wait("overcast up answers", lambda: cli("status", check=False).returncode == 0, 30, log)
        yield cli, log
    finally:
        server.send_signal(signal.SIGTERM)  # uvicorn shuts down cleanly, then the control loop stops
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        for cluster in slurm_clusters.values():  # what it launched keeps running without it
            reset_cluster(cluster, "ovc", tmp_path / "work")


def test_launch_on_slurm_survives_a_node_failure(
    overcast_up: tuple[Overcast, Path], slurm_clusters: dict[str, LocalSlurm], tmp_path: Path
) -> None:
    overcast, log = overcast_up
    oci = slurm_clusters["oci-hpc"]
    job = yaml.safe_load((ROOT / "examples" / "train" / "job.yaml").read_text())  # the example, 2 nodes
    assert job["num_nodes"] == 2
    job["run"] = f"{sys.executable} {TRAIN} --steps {STEPS} --checkpoint-every 10 --step-seconds 0.04"
    job["resources"]["accelerators"] = "H100:8"  # whole nodes, as Slurm allocates them (--exclusive)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))

    submitted = overcast("launch", str(tmp_path / "job.yaml")).stdout
    job_id = submitted.split()[1]  # "submitted <id> (<name>, 2 nodes)"
    name = f"ovc.1.{job_id}"  # the Slurm job name of attempt 1

    def squeue() -> list[str]:
        return oci.command("squeue", "-h", "-n", name, "-o", "%T %N").split()

    _wait("running in squeue", lambda: squeue()[:1] == ["RUNNING"], 30, log)
    nodes = oci.command("scontrol", "show", "hostnames", squeue()[1]).split()
    assert len(nodes) == 2, nodes
    status = _wait("running in overcast status", lambda: _state(overcast.job(job_id), "running"), 15, log)
    assert status["pool_id"] == "slurm/oci-hpc" and status["attempt"] == "1"
    checkpoint = tmp_path / "home" / "checkpoints" / job_id / "checkpoint.npz"
    _wait("a first checkpoint", checkpoint.exists, 15, log)

    oci.command("scontrol", "update", f"nodename={nodes[0]}", "state=down", "reason=test")
    final = _wait("succeeded", lambda: _state(overcast.job(job_id), "succeeded", "failed"), 45, log)
    assert (final["state"], final["pool_id"], final["attempt"], final["restarts"]) == (
        "succeeded", "slurm/azure-hpc", "2", "1",
    ), (final, overcast("events", job_id).stdout)  # fmt: skip
    events = overcast("events", job_id).stdout
    assert "node failure" in events and "requeued" in events, events
    reference = reference_result(tmp_path / "ref", steps=STEPS)
    for rank in ("0", "1"):
        out = overcast("logs", job_id, "--rank", rank).stdout
        assert "resumed from checkpoint at step" in out, out
        assert reference in out.splitlines(), (reference, out)


def _state(job: dict[str, str], *states: str) -> dict[str, str] | None:
    return job if job.get("state") in states else None
