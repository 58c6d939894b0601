"""`overcast serve` end to end: a real process running the LB and replicas on the built-in local providers."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.serve.replica_procs import free_port

ROOT = Path(__file__).resolve().parents[2]


def env_for(home: Path) -> dict[str, str]:
    return dict(os.environ, OVERCAST_HOME=str(home))


def test_overcast_serve_answers_through_its_load_balancer(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "overcast.cli.main", "serve", "examples/serve/service-local.yaml"]
    cmd += ["--port", str(port), "--duration", "20"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_for(tmp_path)
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # probes run every period_seconds: both replicas ready first
            try:
                if len(httpx.get(f"http://127.0.0.1:{port}/-/replicas", timeout=2).json()["ready"]) == 2:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        answers = []
        while time.monotonic() < deadline and len(answers) < 4:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/generate", json={"prompt": "x"}, timeout=2)
                if r.status_code == 200:
                    answers.append(r.json()["replica"])
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert len(answers) == 4
        assert len(set(answers)) == 2  # min_replicas 2, spread over both local providers
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "launching on azure-local" in out and "launching on oci-local" in out


def test_a_job_file_is_refused_with_a_clear_error(tmp_path):
    cmd = [sys.executable, "-m", "overcast.cli.main", "serve", "examples/jobs/single-h100.yaml"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env_for(tmp_path))
    assert res.returncode == 2 and "is a job, not a service" in res.stdout + res.stderr


def test_sigterm_stops_every_replica(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "overcast.cli.main", "serve", "examples/serve/service-local.yaml"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env_for(tmp_path)
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/-/replicas", timeout=1).json()["ready"]:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    urls = httpx.get(f"http://127.0.0.1:{port}/-/replicas", timeout=1).json()["ready"].values()
    proc.terminate()
    proc.communicate(timeout=30)
    for url in urls:  # the replicas are gone, not orphaned
        try:
            httpx.get(url + "/health", timeout=1)
            raise AssertionError(f"replica {url} still answers after overcast serve stopped")
        except httpx.HTTPError:
            pass
