"""Bad input: every kind of mistake names the file, the line and the field, with a suggestion."""

from __future__ import annotations

import pytest

from overcast.spec.errors import SpecError
from overcast.spec.loader import load_spec
from tests.spec.helpers import error, load


def test_unknown_top_level_field_suggests_the_closest_name():
    err = error(
        """
        name: train
        num_node: 4
        run: python train.py
        """
    )
    assert (err.source, err.line, err.field) == ("job.yaml", 2, "num_node")
    assert err.message == "unknown field"
    assert err.suggestions == ["num_nodes"]
    assert str(err) == "job.yaml:2: num_node: unknown field (did you mean num_nodes?)"


def test_unknown_nested_field_names_the_full_path():
    err = error(
        """
        name: train
        resources:
          accelerators: H100:8
          acelerators: H100:8
        """
    )
    assert (err.line, err.field, err.suggestions[0]) == (4, "resources.acelerators", "accelerators")


def test_unknown_accelerator_suggests_catalog_names():
    err = error(
        """
        name: train
        resources:
          accelerators: H1OO:8
        """
    )
    assert (err.line, err.field) == (3, "resources.accelerators")
    assert err.message == "unknown accelerator 'H1OO'"
    assert "H100" in err.suggestions
    assert str(err).startswith(
        "job.yaml:3: resources.accelerators: unknown accelerator 'H1OO' (did you mean H100"
    )


def test_wrong_type_is_reported_with_the_value_given():
    err = error(
        """
        name: train
        num_nodes: four
        """
    )
    assert (err.line, err.field) == (2, "num_nodes")
    assert "valid integer" in err.message and "'four'" in err.message


def test_wrong_type_of_section():
    err = error(
        """
        name: train
        resources: [H100]
        """
    )
    assert (err.line, err.field) == (2, "resources")
    assert "mapping" in err.message


@pytest.mark.parametrize(
    ("body", "line", "field", "words"),
    [
        ("num_nodes: 0\n", 2, "num_nodes", "greater than or equal to 1"),
        ("resources:\n  accelerators: H100:0\n", 3, "resources.accelerators", "at least 1"),
        ("resources:\n  accelerators: {H100: 0}\n", 3, "resources.accelerators", "at least 1"),
        ("resources:\n  max_price_per_hour: -5\n", 3, "resources.max_price_per_hour", "positive price"),
        ("resources:\n  max_hourly_cost: 0\n", 3, "resources.max_hourly_cost", "positive price"),
        ("resources:\n  cpus: -2\n", 3, "resources.cpus", "negative"),
        ("priority: 5000\n", 2, "priority", "less than or equal to 1000"),
        ("resources:\n  accelerators: T4:0.5\n", 3, "resources.accelerators", "fractional"),
        ("resources:\n  accelerators: H100:inf\n", 3, "resources.accelerators", "whole number, got inf"),
        ("resources:\n  accelerators: {H100: .nan}\n", 3, "resources.accelerators", "whole number, got nan"),
        ("resources:\n  cpus: .nan\n", 3, "resources.cpus", "expected vCPUs like 4"),
        ("resources:\n  memory: .inf\n", 3, "resources.memory", "expected memory like 32"),
        ("resources:\n  max_price_per_hour: .nan\n", 3, "resources.max_price_per_hour", "positive price"),
        ("resources:\n  accelerators: {H100: 8, A100: 0.5}\n", 3, "resources.accelerators", "('A100: 0.5')"),
        ("resources:\n  accelerators: {A100: true}\n", 3, "resources.accelerators", "'A100: True'"),
    ],
)
def test_impossible_values(body, line, field, words):
    err = error("name: train\n" + body)
    assert (err.line, err.field) == (line, field)
    assert words in err.message


def test_malformed_yaml_gives_the_parser_line():
    err = error(
        """
        name: train
        resources:
          accelerators: [H100:8
        run: echo hi
        """
    )
    assert err.line == 4 and err.field is None
    assert err.message.startswith("invalid YAML")
    assert "started on line 3" in err.message


def test_bad_indentation_is_malformed_yaml():
    err = error("name: train\n  num_nodes: 2\n")
    assert err.line == 2 and "invalid YAML" in err.message


def test_duplicate_key_is_an_error_not_a_silent_override():
    err = error(
        """
        name: train
        num_nodes: 2
        num_nodes: 4
        """
    )
    assert (err.line, err.field) == (2, "num_nodes")
    assert "given twice" in err.message and "line 3" in err.message


def test_a_key_beside_a_merge_overrides_the_merged_one_and_is_no_duplicate():
    """YAML's merge key: a key written in the mapping wins over the same key merged in (not "given twice");
    a key written twice in the mapping itself still is a duplicate."""
    loaded = load(
        """
        name: train
        run: python train.py
        resources:
          <<: {accelerators: "H100:8", spot: never}
          spot: allowed
        """
    )
    assert loaded.spec.resources.spot.value == "allowed"
    err = error(
        """
        name: train
        resources:
          <<: {accelerators: "H100:8"}
          spot: allowed
          spot: never
        """
    )
    assert (err.line, err.field) == (4, "resources.spot") and "given twice" in err.message


def test_several_problems_are_reported_together_in_file_order():
    err = error(
        """
        name: train
        num_nodes: 0
        resources:
          accelerators: H1OO:8
          cpu: 8
        """
    )
    assert [(p.line, p.field) for p in err.problems] == [
        (2, "num_nodes"),
        (4, "resources.accelerators"),
        (5, "resources.cpu"),
    ]
    assert str(err) == err.problems[0].render("job.yaml")
    assert err.render_all().count("\n") == 2


def test_not_a_mapping_and_empty_file():
    assert "mapping" in error("- a\n- b\n").message
    assert "empty" in error("\n").message


def test_missing_name_in_text_without_a_file_name():
    err = error("run: echo hi\n", source="<string>")
    assert (err.field, err.message) == ("name", "missing field")


def test_unknown_kind_and_kind_job_with_service_section():
    assert error("name: x\nkind: servce\n").suggestions == ["service"]
    err = error("name: x\nkind: job\nservice:\n  replicas: 2\n")
    assert (err.line, err.field) == (3, "service")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="directory"):
        load_spec(tmp_path)


def test_spec_error_is_a_value_error_and_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nresources:\n  accelerators: Z999:8\n")
    with pytest.raises(ValueError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}:3: resources.accelerators: unknown accelerator 'Z999'")


def test_env_names_and_values_are_checked():
    err = error("name: x\nenvs:\n  1BAD: a\n  GOOD: [1, 2]\n")
    assert [(p.line, p.field) for p in err.problems] == [(3, "envs.1BAD"), (4, "envs.GOOD")]


def test_service_rules():
    err = error("name: s\nservice:\n  replica_policy:\n    min_replicas: 3\n    max_replicas: 1\n")
    assert (err.line, err.field) == (5, "service.replica_policy.max_replicas")
    assert error("name: s\ncheckpoint_dir: /c\nservice: {}\n").field == "checkpoint_dir"
    assert error("name: s\nnum_nodes: 2\nservice: {}\n").field == "num_nodes"
    assert error("name: s\nservice:\n  replicas: 2\n  replica_policy: {min_replicas: 1}\n").line == 3


def test_contradictions_between_spellings():
    assert error("name: x\nresources:\n  spot: never\n  use_spot: true\n").field == "resources.use_spot"
    assert error("name: x\nresources:\n  infra: aws\n  cloud: gcp\n").field == "resources.cloud"
    assert error("name: x\nenv: {A: 1}\nenvs: {A: 1}\n").field == "envs"
    assert error("name: x\npriority: 1\nresources:\n  priority: 2\n").field == "resources.priority"
    err = error("name: x\nresources:\n  spot: sometimes\n")
    assert err.suggestions == ["never", "allowed", "required"]


def test_booleans_are_not_numbers():
    err = error("name: x\nnum_nodes: true\n")
    assert (err.line, err.field, err.message) == (2, "num_nodes", "expected a whole number, got true")
    err = error("name: x\nservice:\n  replica_policy:\n    min_replicas: yes\n")
    assert (err.line, err.field) == (4, "service.replica_policy.min_replicas")


def test_a_second_yaml_document_is_an_error():
    err = error("name: a\n---\nname: b\n")
    assert err.line == 2 and "single document" in err.message


def _nested_aliases(levels: int) -> str:
    """Ten lines of YAML that stand for 9**levels items: each anchor is a list of nine of the last."""
    lines = ["x-defs:", "  a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("use", "field"),
    [
        ("run: *a12", "run"),
        ("resources: {providers: *a12}", "resources.providers"),
        ("env: {A: *a12}", "env.A"),
    ],
)
def test_nested_aliases_cost_nothing_and_print_short(use, field):
    # walking or printing the value once per alias use would take longer than the universe has
    err = error(_nested_aliases(12) + f"name: x\n{use}\n")
    assert [(p.line, p.field) for p in err.problems] == [(1, "x-defs"), (16, field)]
    assert len(err.render_all()) < 250, err.render_all()


def test_control_character_is_a_spec_error_with_its_line():
    from overcast.spec.errors import SpecError
    from overcast.spec.loader import load_spec_text

    with pytest.raises(SpecError) as caught:
        load_spec_text("name: a\nrun: b\x1f\n", source="job.yaml")
    assert caught.value.line == 2 and "not allowed" in str(caught.value)


def test_absurdly_deep_nesting_is_a_spec_error():
    from overcast.spec.errors import SpecError
    from overcast.spec.loader import load_spec_text

    with pytest.raises(SpecError, match="nested too deeply"):
        load_spec_text("name: x\nrun: " + "[" * 5000 + "]" * 5000, source="job.yaml")


@pytest.mark.parametrize("hours", ["1e-320", ".inf", ".nan", "0", "-1", "1e9"])
def test_expected_hours_must_be_a_finite_sane_number(hours: str):
    """A runtime estimate of 1e-320 h or infinity used to pass and then crash the scheduler's queue order
    for every team; it is a clear error at submit time instead."""
    err = error(
        f"""
        name: train
        run: python train.py
        expected_hours: {hours}
        """
    )
    assert (err.line, err.field) == (3, "expected_hours")
