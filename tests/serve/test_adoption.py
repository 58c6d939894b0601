"""A service controller that dies (SIGKILL) and starts again adopts the replicas it left running: the same
processes keep serving, none is launched twice, and the load balancer answers from its first request.
Real processes: `overcast serve` itself, and model-server replicas on the local providers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from overcast.backends.base import LaunchRequest
from overcast.backends.local import LocalBackend, LocalCluster
from overcast.control.demo import DEMO_CLUSTERS
from overcast.serve.controller import ServiceController
from overcast.serve.lb import LoadBalancer
from overcast.serve.ledger import ServiceBusy, parse_replica_job_id, replica_job_id
from overcast.spec.models import Autoscaling, JobSpec, ReadinessProbe, ServiceSpec
from tests.serve.replica_procs import MODEL_SERVER, free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cond()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_leftovers(home: Path, clusters) -> None:
    """Stop whatever a failed test left running on these local providers (only launches under ``home``)."""
    for cluster in clusters:
        backend = LocalBackend(cluster, home=home)
        for job_id, attempt in backend.active():
            backend.stop(job_id, attempt, grace_seconds=1.0)


def test_replica_job_ids_are_never_a_job_id_and_read_back_exactly():
    assert parse_replica_job_id(replica_job_id("llm", "r3")) == ("llm", "r3")
    assert parse_replica_job_id(replica_job_id("llm.v2-7b", "r12")) == ("llm.v2-7b", "r12")
    # another service whose name extends this one's is told apart: the rid never holds a dot
    assert parse_replica_job_id("svc.llm.r0.r1") == ("llm.r0", "r1")
    for other in ("j-4kq2m9x7ab", "svc-llm-r0", "svc.llm", "svc.llm.x1", "svc..r1", "svc.llm.r"):
        assert parse_replica_job_id(other) is None, other


# -- `overcast serve`, killed with SIGKILL and started again ----------------------------------------------


def ready_replicas(port: int) -> dict[str, str] | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/-/replicas", timeout=1).json()["ready"]
    except httpx.HTTPError:
        return None


def replica_pids(home: Path) -> dict[str, int]:
    """Launch directory -> runner pid of every launch `overcast serve` made (a relaunch adds one)."""
    return launch_pids(home / "serve")


def launch_pids(home: Path) -> dict[str, int]:
    """Launch directory -> runner pid of every launch on the local providers under ``home``."""
    found = sorted((home / "local").glob("*/launches/*/node-0.pid"))
    return {path.parent.name: json.loads(path.read_text())["pid"] for path in found}


def start_serve(home: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "overcast.cli.main", "serve", "examples/serve/service-local.yaml"]
    env = dict(os.environ, OVERCAST_HOME=str(home))
    return subprocess.Popen(
        [*cmd, "--port", str(port)], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_serve_killed_and_restarted_keeps_the_same_replicas(tmp_path):
    port = free_port()
    first = start_serve(tmp_path, port)
    second = None
    try:
        before = wait_for(lambda: (r := ready_replicas(port)) and len(r) == 2 and r, 30, "2 ready replicas")
        pids = replica_pids(tmp_path)
        assert len(pids) == 2
        first.send_signal(signal.SIGKILL)  # no chance to clean up
        first.communicate(timeout=10)
        for url in before.values():  # the replicas outlive it
            assert httpx.get(url + "/health", timeout=2).status_code == 200

        second = start_serve(tmp_path, port)
        codes: list[int] = []

        def first_answer() -> bool:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/generate", json={"prompt": "x"}, timeout=2)
            except httpx.ConnectError:
                return False  # not listening yet
            codes.append(r.status_code)
            return True

        wait_for(first_answer, 30, "the restarted load balancer to listen")
        for _ in range(20):  # from its first request on, every request is answered
            r = httpx.post(f"http://127.0.0.1:{port}/generate", json={"prompt": "x"}, timeout=2)
            codes.append(r.status_code)
            time.sleep(0.1)
        assert codes == [200] * len(codes)
        assert ready_replicas(port) == before  # the same replicas (ids and addresses)
        assert replica_pids(tmp_path) == pids  # the same processes, nothing launched again
        second.terminate()
        out, _ = second.communicate(timeout=30)
        assert out.count(" adopted on ") == 2 and "launching on" not in out, out
        for url in before.values():  # a graceful stop still stops every replica
            with pytest.raises(httpx.HTTPError):
                httpx.get(url + "/health", timeout=1)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        stop_leftovers(tmp_path / "serve", DEMO_CLUSTERS)


# -- in process: a fresh controller over fresh backends, same home, a changed spec ------------------------

CLUSTERS = (
    LocalCluster("azure-local", nodes=4, price_per_node_hour=1.0),
    LocalCluster("oci-local", nodes=4, price_per_node_hour=1.5),
)


def service(env: dict[str, str]) -> ServiceSpec:
    return ServiceSpec(
        name="llm",
        run=f"exec {sys.executable} {MODEL_SERVER} --port $OVERCAST_REPLICA_PORT --warmup 0.2",
        env=env,
        readiness_probe=ReadinessProbe(path="/health", initial_delay_seconds=0.1, timeout_seconds=1.0),
        replicas=Autoscaling(min_replicas=2),
        max_share_per_provider=0.5,
    )


def test_restart_with_a_new_spec_rolls_the_adopted_replicas(tmp_path):
    log: list[str] = []
    old_ctl = ServiceController(
        service({"MODEL": "v1"}), [LocalBackend(c, home=tmp_path) for c in CLUSTERS], LoadBalancer("llm"),
        home=tmp_path,
    )  # fmt: skip
    try:
        wait_for(lambda: old_ctl.tick() or old_ctl.ready_count() == 2, 30, "2 ready replicas")
        with pytest.raises(ServiceBusy):  # one controller per service
            ServiceController(service({}), [], LoadBalancer("llm"), home=tmp_path)
        old = {rid: live.job_id for rid, live in old_ctl.replicas.items()}
        old_ctl.ledger.unlock()  # the crash: nothing is stopped; the kernel drops a dead process's lock

        backends = [LocalBackend(c, home=tmp_path) for c in CLUSTERS]
        azure = backends[0]
        pool = azure.pools()[0]
        # a replica launch without a record (nobody knows its port) and a job: only the first is ours
        for job_id in (replica_job_id("llm", "r77"), "j-abcdefghij"):
            azure.launch(LaunchRequest(job_id, 1, pool, 1, JobSpec(name="x", run="sleep 60")))
        lb = LoadBalancer("llm")
        ctl = ServiceController(service({"MODEL": "v2"}), backends, lb, home=tmp_path, log=log.append)
        ctl.tick()
        assert set(lb.ready) == set(old)  # the adopted replicas serve from the first tick
        assert ctl.version == 2 and {ctl.replicas[rid].replica.version for rid in old} == {1}
        active = {job for b in backends for job, _ in b.active()}
        assert replica_job_id("llm", "r77") not in active and "j-abcdefghij" in active
        new = set(ctl.replicas) - set(old)
        assert new == {"r78", "r79"}  # rids are never reused, even a stray's

        def rolled() -> bool:
            ctl.tick()
            assert len(lb.ready) >= 2  # the rolling update never drops below the target
            return set(ctl.replicas) == new and ctl.ready_count() == 2

        wait_for(rolled, 30, "the rolling update to version 2")
        active = {job for b in backends for job, _ in b.active()}
        assert not set(old.values()) & active  # old replicas stopped, each launched once
        assert sum(1 for line in log if "launching on" in line) == 2
        ctl.shutdown()
        assert (
            ServiceController(service({}), [], LoadBalancer("llm"), home=tmp_path).ledger.load().replicas
            == {}
        )
    finally:
        stop_leftovers(tmp_path, CLUSTERS)
