"""The example files others' tests and the README rely on stay valid and mean what they say."""

from __future__ import annotations

from pathlib import Path

import pytest

from overcast.spec.dump import dump_spec
from overcast.spec.loader import load_spec, load_spec_text
from overcast.spec.models import AcceleratorRequest, JobSpec, ServiceSpec, SpotPolicy

ROOT = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted([*ROOT.glob("jobs/*.yaml"), *ROOT.glob("skypilot/*.yaml")])


def test_there_are_examples():
    names = {p.name for p in FILES}
    assert {
        "single-h100.yaml",
        "gang-4node.yaml",
        "spot-a100.yaml",
        "impossible.yaml",
        "service-llm.yaml",
    } <= names
    assert len(list(ROOT.glob("skypilot/*.yaml"))) >= 3


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_loads_and_survives_a_round_trip(path):
    loaded = load_spec(path)
    again = load_spec_text(dump_spec(loaded.spec), "dumped.yaml")
    assert again.spec == loaded.spec and again.warnings == []


def test_overcast_job_examples_have_no_warnings():
    for path in ROOT.glob("jobs/*.yaml"):
        assert load_spec(path).warnings == [], path


def test_example_meanings():
    single = load_spec(ROOT / "jobs/single-h100.yaml").spec
    assert isinstance(single, JobSpec) and single.num_nodes == 1
    assert single.resources.accelerators == (AcceleratorRequest(name="H100", count=8),)

    gang = load_spec(ROOT / "jobs/gang-4node.yaml").spec
    assert isinstance(gang, JobSpec) and gang.num_nodes == 4
    assert gang.resources.accelerators == (AcceleratorRequest(name="H100", count=8),)

    spot = load_spec(ROOT / "jobs/spot-a100.yaml").spec
    assert spot.resources.spot is SpotPolicy.ALLOWED
    assert {str(a) for a in spot.resources.accelerators} == {"A100-80GB:8", "H100:8"}

    impossible = load_spec(ROOT / "jobs/impossible.yaml").spec
    assert isinstance(impossible, JobSpec)
    assert impossible.num_nodes * impossible.resources.accelerators[0].count >= 64

    service = load_spec(ROOT / "jobs/service-llm.yaml").spec
    assert isinstance(service, ServiceSpec) and service.spot_hedge is not None


def test_skypilot_examples_cover_any_of_recovery_and_service():
    train = load_spec(ROOT / "skypilot/train-multinode-anyof.yaml").spec
    assert isinstance(train, JobSpec) and train.num_nodes == 2 and len(train.resources.providers) == 3
    spot = load_spec(ROOT / "skypilot/spot-finetune-recovery.yaml").spec
    assert isinstance(spot, JobSpec) and spot.resources.spot is SpotPolicy.REQUIRED
    assert spot.max_retries_on_failure == 3 and spot.resources.ordered
    serve = load_spec(ROOT / "skypilot/serve-vllm.yaml").spec
    assert isinstance(serve, ServiceSpec) and serve.port == 8000
