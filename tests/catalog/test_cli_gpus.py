from __future__ import annotations

import json

from typer.testing import CliRunner

from overcast.catalog.load import load_offers
from overcast.cli.main import app

runner = CliRunner()


def _json(*args: str) -> list[dict]:
    result = runner.invoke(app, ["gpus", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_summary_lists_gpus_and_hides_tpus_without_all() -> None:
    names = {s["accelerator"] for s in _json()}
    assert {"H100", "H200", "A100", "L4", "MI300X"} <= names
    assert not any(n.startswith("tpu-") for n in names) and "Trainium" not in names
    assert {"tpu-v5p-8", "Trainium"} <= {s["accelerator"] for s in _json("--all")}


def test_summary_cheapest_is_cheapest() -> None:
    h100 = next(s for s in _json() if s["accelerator"] == "H100")
    prices = [o.price_per_gpu for o in load_offers() if o.accelerator == "H100" and o.price is not None]
    assert h100["cheapest"]["price_per_gpu"] == min(prices)
    assert len(h100["providers"]) >= 10


def test_table_output() -> None:
    result = runner.invoke(app, ["gpus", "H100:8", "--provider", "oci", "--provider", "AWS"])
    assert result.exit_code == 0, result.output
    assert "BM.GPU.H100.8" in result.output and "p5.48xlarge" in result.output
    assert "cheapest per provider" in result.output
    summary = runner.invoke(app, ["gpus"])
    assert summary.exit_code == 0 and "ACCELERATOR" in summary.output


def test_filters_spot_and_all() -> None:
    rows = _json("A100-80GB", "--region", "us-east-1", "--all")
    assert (
        rows
        and all(r["region"] == "us-east-1" for r in rows)
        and len({r["provider"] for r in rows}) < len(rows)
    )
    spot = _json("H100:8", "--spot")
    assert all(r["spot_price"] is not None for r in spot)
    assert [r["spot_price_per_gpu"] for r in spot] == sorted(r["spot_price_per_gpu"] for r in spot)


def test_aliases_work_on_the_command_line() -> None:
    assert _json("nvidia-h100:8") == _json("H100:8")


def test_fractional_offers_are_listed_and_marked() -> None:
    rows = _json("L4:0.25", "--all")
    assert rows and all(r["fractional"] for r in rows)


def test_unknown_name_exits_2_with_suggestions() -> None:
    result = runner.invoke(app, ["gpus", "H10"])
    assert result.exit_code == 2
    assert "unknown accelerator 'H10'; did you mean H100" in result.output
    assert "Traceback" not in result.output


def test_bad_count_provider_and_region() -> None:
    for args, message in [
        (["H100:x"], "bad count 'x'"),
        (["H100:0"], "bad count '0'"),
        (["H100:nan"], "bad count 'nan'"),
        (["H100:inf"], "bad count 'inf'"),
        ([":8"], "no accelerator name in ':8'"),
        (["--provider", "awz"], "unknown provider 'awz'; did you mean aws?"),
        (["--region", "us-eats-1"], "no offers in region 'us-eats-1'; did you mean us-east-1"),
    ]:
        result = runner.invoke(app, ["gpus", *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_no_offers_for_that_count_says_which_counts_exist() -> None:
    counts = sorted({o.accelerator_count for o in load_offers() if o.accelerator == "H100"})
    missing = next(n for n in range(1, 100) if n not in counts)
    result = runner.invoke(app, ["gpus", f"H100:{missing}"])
    assert result.exit_code == 1
    assert f"no offers for H100:{missing}" in result.output
    assert ", ".join(f"{c:g}" for c in counts) in result.output


def test_fleet_reservations_and_clusters_are_shown_with_the_same_filters(tmp_path) -> None:
    result = runner.invoke(app, ["gpus", "H100:8", "--fleet", "examples/fleet.yaml", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    fleet = {p["pool"]: p for p in out["fleet"]}
    assert fleet["slurm/oci-hpc"]["nodes"] == 16 and fleet["slurm/oci-hpc"]["price_per_gpu"] == 1.40
    reserved = [p for p in out["fleet"] if p["pool"].endswith("/reserved")]  # the reservations
    assert {(p["provider"], p["price_per_gpu"]) for p in reserved} <= {("oci", 2.10), ("aws", 3.20)}
    assert ("oci", 2.10) in {(p["provider"], p["price_per_gpu"]) for p in reserved}  # until 2027
    assert all(p["accelerator"] == "H100" and p["gpus_per_node"] == 8 for p in out["fleet"])  # not the A100s
    assert out["catalog"] and all(o["accelerator"] == "H100" for o in out["catalog"])
    table = runner.invoke(app, ["gpus", "A100-80GB", "--fleet", "examples/fleet.yaml"])
    assert table.exit_code == 0 and "Your fleet" in table.output and "local/" in table.output
    bad = tmp_path / "fleet.yaml"
    bad.write_text("clusters:\n  - {name: x, nodes: 2}\n")
    result = runner.invoke(app, ["gpus", "--fleet", str(bad)])
    assert result.exit_code == 2 and str(bad) in result.output


def test_fleet_filters_may_name_the_fleets_own_provider_and_region() -> None:
    for args in (["--region", "oci-hpc"], ["--provider", "oci-hpc"]):
        result = runner.invoke(app, ["gpus", "H100", "--fleet", "examples/fleet.yaml", *args, "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        assert [p["pool"] for p in out["fleet"]] == ["slurm/oci-hpc"] and out["catalog"] == []
    assert runner.invoke(app, ["gpus", "H100", "--provider", "oci-hpc"]).exit_code == 2  # no fleet: a typo
