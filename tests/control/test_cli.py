"""The jobs CLI against a real `overcast up` (API server + control loop in one process) over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.control.harness import ROOT
from tests.fixtures.postgres import free_port

JOB = """
kind: job
name: {name}
resources: {{accelerators: "H100:1"}}
run: {run}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    env = os.environ | {"OVERCAST_HOME": str(home), "OVERCAST_API_URL": f"http://127.0.0.1:{port}"}
    env.pop("OVERCAST_TOKEN", None)
    env.pop("OVERCAST_DATABASE_URL", None)
    fleet = ROOT / "examples" / "fleet-local.yaml"
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "overcast.cli.main", "up", "--port", str(port), "--fleet", str(fleet),
             "--grace", "2", "--interval", "0.2"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{env['OVERCAST_API_URL']}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail(f"overcast up did not answer: {(home / 'server.log').read_text()}")
        env["HOME_DIR"] = str(home)
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def cli(env: dict[str, str], *args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    """Run the CLI in this process (fast; the client reads its settings from the environment)."""
    from typer.testing import CliRunner

    from overcast.cli.main import app

    result = CliRunner().invoke(app, list(args), env=env | {"COLUMNS": str(columns)}, catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def cli_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "overcast.cli.main", *args],
        capture_output=True, text=True, env=env | {"COLUMNS": "200"}, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def job_file(tmp_path: Path, name: str, run: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(JOB.format(name=name, run=run))
    return str(path)


def test_token_file_is_private(server: dict[str, str]) -> None:
    token = Path(server["HOME_DIR"]) / "token"
    assert token.stat().st_mode & 0o777 == 0o600 and token.read_text().strip()


def test_launch_wait_logs_status_and_events(server: dict[str, str], tmp_path: Path) -> None:
    hello = job_file(tmp_path, "hello", "echo hello from $OVERCAST_JOB_ID")
    done = cli_process(server, "launch", hello, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = done.stdout.split()[1]
    assert "placed" in done.stdout and "succeeded" in done.stdout.splitlines()[-1]
    assert cli(server, "logs", job_id).stdout.strip() == f"hello from {job_id}"
    assert job_id in cli(server, "status").stdout
    assert "succeeded" in cli(server, "status", job_id).stdout
    assert "launched" in cli(server, "events", job_id).stdout


def test_launch_env_overrides_the_file_and_takes_a_bare_name_from_the_shell(
    server: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "env.yaml"
    path.write_text(
        'name: env\nresources: {accelerators: "H100:1"}\nenv: {GREETING: file, TOKEN: null, KEEP: kept}\n'
        "run: echo $GREETING $TOKEN $KEEP\n"
    )
    shell = server | {"TOKEN": "from-shell"}
    done = cli(shell, "launch", str(path), "--env", "GREETING=from-cli", "-e", "TOKEN", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "left unset" not in done.stderr
    job_id = done.stdout.split()[1]
    assert cli(server, "logs", job_id).stdout.strip() == "from-cli from-shell kept"
    bad = cli(server, "launch", str(path), "--env", "1X=y")
    assert bad.returncode == 2 and "'1X' is not a valid environment variable name" in bad.stderr
    unset = cli(server | {"NOT_SET_HERE": ""}, "launch", str(path), "--env", "NOT_SET_ANYWHERE")
    assert unset.returncode == 2 and "NOT_SET_ANYWHERE: not set in this shell" in unset.stderr


def test_capacity_chaos_fails_over_and_pools_show_the_cooldown(
    server: dict[str, str], tmp_path: Path
) -> None:
    assert "out of capacity" in cli(server, "chaos", "capacity", "azure-local", "--duration", "30").stdout
    done = cli(server, "launch", job_file(tmp_path, "moved", "exit 0"), "--wait")
    assert done.returncode == 0 and "capacity-error" in done.stdout, done.stdout + done.stderr
    pools = cli(server, "pools").stdout
    azure = next(line for line in pools.splitlines() if "local/azure-local" in line)
    assert "out-of-capacity" in azure
    assert "is up" in cli(server, "chaos", "up", "azure-local").stdout


def wait_state(server: dict[str, str], job_id: str, want: str, timeout: float = 20.0) -> None:
    token = (Path(server["HOME_DIR"]) / "token").read_text().strip()
    url = f"{server['OVERCAST_API_URL']}/v1/jobs/{job_id}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(url, headers={"Authorization": f"Bearer {token}"}).json()["state"] == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{job_id} not {want} after {timeout}s")


def test_cancel_a_running_job(server: dict[str, str], tmp_path: Path) -> None:
    done = cli(server, "launch", job_file(tmp_path, "long", "sleep 60"))
    job_id = done.stdout.split()[1]
    wait_state(server, job_id, "running")
    assert cli(server, "cancel", job_id).returncode == 0
    wait_state(server, job_id, "cancelled")


def test_user_mistakes_get_clear_errors_not_tracebacks(server: dict[str, str], tmp_path: Path) -> None:
    missing = cli_process(server, "launch", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr  # bad input: 2, as optimize
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: job\nname: x\nnum_nodes: zero\n")
    invalid = cli(server, "launch", str(bad))
    assert invalid.returncode == 2 and f"{bad}:3: num_nodes" in invalid.stderr
    unknown = cli(server, "chaos", "down", "nowhere")
    assert unknown.returncode == 1 and "unknown provider 'nowhere'" in unknown.stderr
    assert "j-doesnotexist not found" in cli(server, "status", "j-doesnotexist").stderr
    offline = cli_process(server | {"OVERCAST_API_URL": f"http://127.0.0.1:{free_port()}"}, "status")
    assert offline.returncode == 1 and "overcast up" in offline.stderr
    port = server["OVERCAST_API_URL"].rsplit(":", 1)[1]
    second = cli_process(server, "up", "--port", port)  # the same port: stops before starting anything
    assert second.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in second.stderr
    assert "admin token" not in second.stdout
    for result in (missing, invalid, unknown, offline, second):
        assert "Traceback" not in result.stderr


def test_logs_follow_waits_for_the_start_and_ends(server: dict[str, str], tmp_path: Path) -> None:
    run = "'for i in 1 2 3; do echo line $i; sleep 0.3; done'"
    job_id = cli(server, "launch", job_file(tmp_path, "chatty", run)).stdout.split()[1]
    followed = cli(server, "logs", job_id, "-f")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.split("\n")[:3] == ["line 1", "line 2", "line 3"]


def test_ids_stay_whole_in_a_narrow_terminal(server: dict[str, str], tmp_path: Path) -> None:
    job_id = cli(server, "launch", job_file(tmp_path, "narrow", "exit 0")).stdout.split()[1]
    assert job_id in cli(server, "status", columns=60).stdout  # so it can be copied into `overcast logs`
    assert "local/azure-local" in cli(server, "pools", columns=60).stdout
