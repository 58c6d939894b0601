"""The Kubernetes backend's pure parts: the fleet entry, names, pod-status classification, lazy import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from overcast.backends.base import EventKind
from overcast.backends.kubernetes_manifest import job_name, label_value, owner
from overcast.backends.kubernetes_status import ended_at, terminal_outcome
from overcast.catalog.fleet import FleetError, parse_fleet
from overcast.control.setup import backends_from_fleet

SERVICE = """kind: service
name: echo
service: {readiness_probe: /health, replicas: 1}
run: python -m http.server $OVERCAST_PORT
"""
ENTRY = """clusters:
  - name: lab
    kubernetes: {api: "https://10.0.0.1:6443", namespace: training, token_file: /var/run/tok}
    nodes: 4
    gpus_per_node: 8
    accelerator: H100
    price_per_gpu_hour: 1.5
"""


def test_a_fleet_cluster_may_be_a_kubernetes_cluster(tmp_path: Path) -> None:
    fleet = parse_fleet(ENTRY)
    (cluster,) = fleet.clusters
    assert (cluster.kind, cluster.backend) == ("kubernetes", "kubernetes:lab")
    (backend,) = backends_from_fleet(fleet, tmp_path)
    settings = backend.cluster  # type: ignore[attr-defined]
    assert (backend.name, settings.namespace, settings.price_per_node_hour) == (
        "kubernetes:lab",
        "training",
        12.0,
    )
    assert settings.logs_dir == str(tmp_path / "logs")


def test_a_cluster_names_exactly_one_backend_and_wrong_fields_name_field_and_file() -> None:
    both = ENTRY.replace("    nodes: 4", "    slurm: {}\n    nodes: 4")
    with pytest.raises(
        FleetError, match=r"fleet.yaml:2: clusters\[0\]: give exactly one of 'slurm', 'kubernetes'"
    ):
        parse_fleet(both, "fleet.yaml")
    typo = ENTRY.replace("namespace:", "namspace:")
    with pytest.raises(FleetError, match=r"fleet.yaml:3: clusters\[0\]\.kubernetes\.namspace: unknown field"):
        parse_fleet(typo, "fleet.yaml")
    bad = ENTRY.replace("namespace: training", "namespace: Team_A")
    with pytest.raises(FleetError, match=r"clusters\[0\]\.kubernetes\.namespace: String should match"):
        parse_fleet(bad, "fleet.yaml")


def test_names_are_dns_labels_and_label_values_whatever_the_job_id() -> None:
    assert job_name("ovc", "j-abc23", 2) == "ovc-j-abc23-2"
    odd = job_name("ovc", "svc.Chat_Bot.r7", 1)  # a service replica's launch id
    assert odd.startswith("ovc-svc-chat-bot-r7-") and odd.endswith("-1")
    assert odd != job_name("ovc", "svc.chat-bot.r7", 1)  # distinct ids, distinct names
    long = job_name("ovc", "j-" + "x" * 80, 12)
    assert len(long + "-99") <= 63  # pod hostnames <name>-<index> stay DNS labels
    assert label_value("svc.chat.r1") == "svc.chat.r1" and len(label_value("y" * 99)) <= 63


def _job(reason: str = "", message: str = "", kind: str = "Failed") -> dict:
    condition = {"type": kind, "status": "True", "reason": reason, "message": message}
    return {"metadata": {"name": "j"}, "status": {"conditions": [condition]}}


def _pod(phase: str, exit_code: int = 0, **status: object) -> dict:
    terminated = {"state": {"terminated": {"exitCode": exit_code}}}
    labels = {"batch.kubernetes.io/job-completion-index": "0"}
    pod_status = {"phase": phase, "containerStatuses": [terminated], **status}
    return {"metadata": {"name": "p", "labels": labels}, "spec": {"nodeName": "n1"}, "status": pod_status}


def test_who_is_at_fault_decides_the_event() -> None:
    assert terminal_outcome(_job(kind="Complete"), []).kind is EventKind.SUCCEEDED  # type: ignore[union-attr]
    failed = terminal_outcome(_job("BackoffLimitExceeded"), [_pod("Failed", 7)])
    assert failed is not None and (failed.kind, failed.exit_code) == (EventKind.FAILED, 7)
    policy = _job(
        "PodFailurePolicy", "Pod ns/p has condition DisruptionTarget matching FailJob rule at index 0"
    )
    assert terminal_outcome(policy, []).kind is EventKind.PREEMPTED  # type: ignore[union-attr]  # pods gone
    assert terminal_outcome(_job("DeadlineExceeded"), []).kind is EventKind.PREEMPTED  # type: ignore[union-attr]
    evicted = _pod("Failed", 137, reason="Evicted", message="The node was low on resource: memory.")
    assert terminal_outcome({"status": {}}, [evicted]).kind is EventKind.PREEMPTED  # type: ignore[union-attr]
    assert terminal_outcome({"status": {}}, [_pod("Running")]) is None


def _container(**state: dict) -> dict:
    return {"status": {"containerStatuses": [{"state": state}]}}


def _finished(stamp: str) -> dict:
    return _container(terminated={"finishedAt": stamp})


def test_a_gang_ended_when_its_last_container_finished() -> None:
    now = 1_900_000_000.0  # 2030-03-17T17:46:40Z
    done = _job(kind="Complete")
    pods = [_finished("2030-03-17T17:40:00Z"), _finished("2030-03-17T17:41:00Z")]
    assert ended_at(done, pods, now) == now - 340  # the later of the two, not the poll's time
    running = {
        "status": {"containerStatuses": [{"state": {"running": {"startedAt": "2030-03-17T17:00:00Z"}}}]}
    }
    assert ended_at(done, [*pods, running], now) == now  # a rank still runs: it is billed until now
    waiting = _container(waiting={"reason": "ContainerCreating"})
    assert ended_at(done, [*pods, waiting], now) == now - 340
    done["status"]["conditions"][0]["lastTransitionTime"] = "2030-03-17T17:45:00Z"
    assert ended_at(done, [], now) == now - 100  # pods gone: when the Job's end was recorded
    assert ended_at(_job(kind="Complete"), [], now) == now  # nothing to tell: the poll's time
    assert ended_at(done, [_finished("2031-01-01T00:00:00Z")], now) == now  # a clock ahead of ours
    assert ended_at(done, [_finished("garbage")], now) == now


def test_only_fleets_with_kubernetes_import_the_client() -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from overcast.catalog.fleet import parse_fleet\n"
        "from overcast.control.setup import backends_from_fleet\n"
        "import overcast.backends.kubernetes\n"
        "backends_from_fleet(parse_fleet('clusters: [{name: a, local: {}, nodes: 1, gpus_per_node: 0}]'), "
        "Path(sys.argv[1]))\n"
        "print('kubernetes' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, "/tmp"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_fleet_entries_sharing_a_namespace_need_prefixes_of_their_own(tmp_path: Path) -> None:
    second = """  - name: lab-2
    kubernetes: {api: "https://10.0.0.1:6443", namespace: training%s}
    nodes: 1
    gpus_per_node: 0
"""
    with pytest.raises(FleetError, match=r"fleet.yaml:9: clusters\[1\]\.kubernetes: same api, namespace"):
        parse_fleet(ENTRY + second % "", "fleet.yaml")
    fleet = parse_fleet(ENTRY + second % ", job_prefix: b")
    first, other = backends_from_fleet(fleet, tmp_path)
    assert (first.cluster.job_prefix, other.cluster.job_prefix) == ("ovc", "b")  # type: ignore[attr-defined]
    (other_home,) = backends_from_fleet(parse_fleet(ENTRY), tmp_path / "elsewhere")
    owners = {owner(b.cluster) for b in (first, other, other_home)}  # type: ignore[attr-defined]
    assert len(owners) == 3  # two entries and another overcast home: three owner labels


def test_serve_runs_replicas_on_local_providers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import overcast.serve.controller
    from overcast.cli.main import app

    built: list[str] = []

    def controller(spec: object, backends: list, *args: object, **kw: object) -> None:
        built.extend(b.name for b in backends)
        raise ValueError("stop here")

    monkeypatch.setattr(overcast.serve.controller, "ServiceController", controller)
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path / "home"))
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(ENTRY + "  - {name: box, local: {}, nodes: 1, gpus_per_node: 0}\n")
    service = tmp_path / "svc.yaml"
    service.write_text(SERVICE)
    result = CliRunner().invoke(app, ["serve", str(service), "--fleet", str(fleet)])
    assert result.exit_code == 2 and "stop here" in result.stdout, result.stdout
    assert built == ["local:box"]  # not the job loop's kubernetes:lab, which would fight it
