"""``overcast optimize`` on the example files, through the real CLI app and the bundled catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from overcast.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "examples" / "jobs"
runner = CliRunner()


def optimize(*args: str):
    return runner.invoke(app, ["optimize", *args])


def test_single_h100_table() -> None:
    result = optimize(str(JOBS / "single-h100.yaml"), "--top", "3")
    assert result.exit_code == 0, result.output
    assert "finetune-8b: 1 node(s) x H100:8" in result.output
    assert "cheapest" in result.output


def test_json_is_ranked_by_expected_cost_and_honours_the_spec() -> None:
    result = optimize(str(JOBS / "gang-4node.yaml"), "--json", "--top", "5")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["placed"] and len(data["ranked"]) == 5
    costs = [r["expected_cost"] for r in data["ranked"]]
    assert costs == sorted(costs)
    allowed = {"aws", "azure", "oci", "gcp", "nebius"}  # the file's resources.providers
    assert all(r["provider"] in allowed and r["nodes"] == 4 for r in data["ranked"])
    assert data["excluded"]["lambda"] == "not in resources.providers (aws, azure, oci, gcp, nebius)"


def test_fleet_reservation_ranks_first() -> None:
    result = optimize(
        str(JOBS / "gang-4node.yaml"), "--json", "--fleet", str(ROOT / "examples" / "fleet.yaml")
    )
    assert result.exit_code == 0, result.output
    best = json.loads(result.output)["ranked"][0]
    assert best["purchase"] == "reserved" and best["expected_cost"] == 0.0
    assert "reserved capacity free" in best["reason"]


EXAMPLES = sorted(JOBS.glob("*.yaml")) + sorted((ROOT / "examples" / "skypilot").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_with_the_fleet(path: Path) -> None:
    """The fleet's H100 reservations must not break a job asking for another accelerator."""
    result = optimize(str(path), "--json", "--fleet", str(ROOT / "examples" / "fleet.yaml"))
    assert result.exit_code in (0, 1), result.output
    data = json.loads(result.output)
    assert data["placed"] == (result.exit_code == 0)
    assert data["ranked"] or data["excluded"]


def test_impossible_request_exits_1_with_a_reason_per_provider() -> None:
    result = optimize(str(JOBS / "impossible.yaml"))
    assert result.exit_code == 1
    assert "no pool fits impossible-b200x64 (8 x B200:64)" in result.output
    assert "but none with 64 per node" in result.output
    assert "  azure: no pool offers B200" in result.output


def test_impossible_json() -> None:
    result = optimize(str(JOBS / "impossible.yaml"), "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["placed"] is False and data["ranked"] == []
    assert data["excluded"]["azure"] == "no pool offers B200"


@pytest.mark.parametrize(
    "name", ["spot-finetune-recovery.yaml", "train-multinode-anyof.yaml", "serve-vllm.yaml"]
)
def test_skypilot_files(name: str) -> None:
    result = optimize(str(ROOT / "examples" / "skypilot" / name), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ranked"]


def test_bad_file_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: job\nname: x\nresources:\n  accelerators: H1OO:8\n")
    result = optimize(str(bad))
    assert result.exit_code == 2
    assert "bad.yaml:4" in result.output and "Traceback" not in result.output
    missing = optimize(str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_bad_fleet_file_is_a_clear_error(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("quotas:\n  - {provider: aws, max_gpus: -3}\n")
    result = optimize(str(JOBS / "single-h100.yaml"), "--fleet", str(fleet))
    assert result.exit_code == 2
    assert "fleet.yaml:2: quotas[0].max_gpus" in result.output and "Traceback" not in result.output


def test_reservation_the_catalog_cannot_back_is_a_clear_error(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "reservations:\n  - {provider: oci, region: nowhere-1, accelerator: H100, gpus: 8,"
        " price_per_gpu_hour: 2.0, until: 2099-01-01}\n"
    )
    result = optimize(str(JOBS / "single-h100.yaml"), "--fleet", str(fleet))
    assert result.exit_code == 2, result.output
    assert "no such instance in the catalog" in result.output and "Traceback" not in result.output


def test_lazy_command_table_matches_what_the_modules_register() -> None:
    import importlib

    import typer

    from overcast.cli.main import COMMANDS

    registered: dict[str, str] = {}
    for module in dict.fromkeys(COMMANDS.values()):
        group = typer.Typer()
        group.callback()(lambda: None)
        importlib.import_module(module).register(group)
        names = [c.name or c.callback.__name__ for c in group.registered_commands]
        names += [g.name for g in group.registered_groups]
        registered |= dict.fromkeys(names, module)
    assert registered == COMMANDS
    listed = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert all(f" {name} " in listed for name in [*COMMANDS, "version"])


def test_optimize_imports_no_other_command_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from overcast.cli.main import app\n"
        "try: app(['optimize', sys.argv[1], '--json'])\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('overcast.cli.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(JOBS / "single-h100.yaml")], capture_output=True, text=True
    )
    assert out.stdout.splitlines()[-1] == "['overcast.cli.main', 'overcast.cli.optimize']", out.stderr
