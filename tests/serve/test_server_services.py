"""End to end: `overcast serve FILE --server URL` submits a service to `overcast up`, which runs it beside
jobs on the same local nodes (the job loop counts the replicas' nodes, GET /v1/pools shows them used); the
server is killed (SIGKILL) and started again and the service comes back on the same replicas, the job on
the same attempt; a DELETE through the API stops every replica. Real processes throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from overcast.control.demo import DEMO_CLUSTERS
from tests.serve.replica_procs import free_port
from tests.serve.test_adoption import ROOT, launch_pids, stop_leftovers, wait_for

CLI = [sys.executable, "-m", "overcast.cli.main"]


def start_up(env: dict[str, str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*CLI, "up", "--port", str(port), "--interval", "0.2"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz"), 30, "overcast up to answer")
    return proc


def _get(url: str, headers: dict[str, str] | None = None) -> httpx.Response | None:
    try:
        return httpx.get(url, headers=headers, timeout=2)
    except httpx.HTTPError:
        return None


def test_a_service_submitted_to_the_server_survives_its_restart_and_is_deleted(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OVERCAST_DATABASE_URL", "OVERCAST_TOKEN")}
    env["OVERCAST_HOME"] = str(tmp_path)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    up = start_up(env, port)
    try:
        submit = [*CLI, "serve", "examples/serve/service-local.yaml", "--server", api]
        done = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "version 1" in done.stdout, done.stdout + done.stderr
        auth = {"Authorization": f"Bearer {(tmp_path / 'token').read_text().strip()}"}

        def ready(after: float = 0.0) -> dict | None:
            r = _get(f"{api}/v1/services/tiny-llm", auth)
            status = r.json()["status"] if r is not None and r.status_code == 200 else {}
            return status if status.get("ready") == 2 and status.get("at", 0) > after else None

        before = wait_for(ready, 30, "the service's 2 replicas")
        assert httpx.post(before["url"] + "/generate", json={"prompt": "x"}, timeout=5).status_code == 200
        # a replica on each demo provider (2 nodes each, max_share 0.5): one node left on each
        pools = httpx.get(f"{api}/v1/pools", headers=auth, timeout=5).json()["pools"]
        assert sorted((p["id"], p["used"]) for p in pools) == [
            ("local/azure-local", 1),
            ("local/oci-local", 1),
        ]
        job = {"yaml": "name: one\nresources: {accelerators: H100:1}\nrun: sleep 600\n"}
        one = httpx.post(f"{api}/v1/jobs", json=job, headers=auth, timeout=5).json()["id"]
        two = job | {"yaml": job["yaml"].replace("one", "pair") + "num_nodes: 2\n"}
        pair = httpx.post(f"{api}/v1/jobs", json=two, headers=auth, timeout=5).json()["id"]

        def job_state(job_id: str) -> dict:
            r = _get(f"{api}/v1/jobs/{job_id}", auth)
            return r.json() if r is not None else {}

        wait_for(lambda: job_state(one)["state"] == "running", 30, "the 1-node job")
        waiting = wait_for(lambda: (j := job_state(pair))["reason"] and j, 30, "the 2-node job's reason")
        assert waiting["state"] == "pending", waiting  # no provider has 2 nodes the replicas leave free
        pids = launch_pids(tmp_path)
        assert len(pids) == 3  # 2 replicas, 1 job: each on a node of its own

        up.send_signal(signal.SIGKILL)
        up.wait(10)
        up = start_up(env, port)
        codes: list[int] = []

        def answered() -> bool:  # the load balancer, back on its port, answers from its first request on
            try:
                r = httpx.post(before["url"] + "/generate", json={"prompt": "x"}, timeout=2)
            except httpx.ConnectError:
                return False
            codes.append(r.status_code)
            return len(codes) >= 10

        wait_for(answered, 30, "the load balancer after the restart")
        assert codes == [200] * len(codes)
        after = wait_for(lambda: ready(before["at"]), 30, "the service after the restart")
        assert [r["id"] for r in after["replicas"]] == [r["id"] for r in before["replicas"]]
        assert httpx.post(after["url"] + "/generate", json={"prompt": "x"}, timeout=5).status_code == 200
        assert launch_pids(tmp_path) == pids  # the same processes: adopted, none launched again
        assert job_state(one)["state"] == "running" and job_state(one)["attempt"] == 1  # not an orphan
        assert job_state(pair)["state"] == "pending"

        assert httpx.delete(f"{api}/v1/services/tiny-llm", headers=auth, timeout=5).status_code == 202
        wait_for(
            lambda: (r := _get(f"{api}/v1/services/tiny-llm", auth)) and r.status_code == 404, 30, "delete"
        )
        deadline = time.monotonic() + 10
        for replica in after["replicas"]:  # stopped, not orphaned
            while _get(replica["url"] + "/health") is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _get(replica["url"] + "/health") is None
    finally:
        if up.poll() is None:
            up.terminate()
            up.wait(60)
        stop_leftovers(tmp_path, DEMO_CLUSTERS)
