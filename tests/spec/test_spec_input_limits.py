"""Input that used to cost exponential time, change meaning, or skip checks on one of the two paths in
(YAML through the loader, JSON straight into the models)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from overcast.spec import yamldoc
from overcast.spec.models import MAX_ACCELERATORS_PER_NODE, MAX_REPLICAS, JobSpec, ServiceSpec
from tests.spec.helpers import error, load


def _mapping_aliases(levels: int) -> str:
    """Two anchors per level, each a mapping of aliases to both anchors of the level below: 2**levels
    paths through ~2 * levels nodes."""
    lines = ["x-defs:", "  a0: &a0 {p: x}", "  b0: &b0 {q: x}"]
    for i in range(1, levels + 1):
        lines.append(f"  a{i}: &a{i} {{p: *a{i - 1}, q: *b{i - 1}}}")
        lines.append(f"  b{i}: &b{i} {{p: *a{i - 1}, q: *b{i - 1}, r: 1}}")
    return "\n".join(lines) + "\nname: x\nrun: echo hi\n"


def test_aliased_mappings_are_walked_once_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    # the walk once lost its set of walked nodes at every mapping: 20 levels (1.3 KB) took 43 s
    calls = 0
    walk = yamldoc._walk

    def counting(*args: object, **kw: bool) -> None:
        nonlocal calls
        calls += 1
        walk(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(yamldoc, "_walk", counting)
    yamldoc.parse_yaml(_mapping_aliases(12), "job.yaml")
    assert calls < 400, calls  # ~100 nodes and alias uses, walked twice; the old walk made 57,302
    err = error(_mapping_aliases(20))
    assert (err.line, err.field) == (1, "x-defs")


def test_env_keys_and_values_are_taken_as_written() -> None:
    # YAML 1.1 reads NO/ON/Yes as booleans (ON and Yes were both "True", one lost) and 0755, 1.10 and
    # 12:30 as 493, 1.1 and 750
    loaded = load(
        """
        name: a
        env:
          NO: 1
          ON: 2
          Yes: 3
          MODE: 0755
          VER: 1.10
          T: 12:30
          DEBUG: true
          QUOTED: "0x1F"
          EMPTY: ""
          UNSET:
        """
    )
    assert loaded.spec.env == {
        "NO": "1",
        "ON": "2",
        "Yes": "3",
        "MODE": "0755",
        "VER": "1.10",
        "T": "12:30",
        "DEBUG": "true",
        "QUOTED": "0x1F",
        "EMPTY": "",
    }
    assert [w.split(": ")[1] for w in loaded.warnings] == ["env.UNSET"]


def test_env_problems_name_the_key_as_written_and_its_line() -> None:
    err = error("name: a\nenv:\n  A: 1\n  9X: 2\n  off: [1]\n")
    assert [(p.line, p.field) for p in err.problems] == [(4, "env.9X"), (5, "env.off")]


def test_env_from_an_anchor_keeps_its_text() -> None:
    assert load("name: a\nenv: {V: &v 010, W: *v}\n").spec.env == {"V": "010", "W": "010"}


def test_replica_counts_are_bounded_in_yaml_and_json() -> None:
    # planning runs per replica each tick: 10**12 was accepted
    err = error("name: s\nrun: x\nservice:\n  replicas: 1000000000000\n")
    assert (err.line, err.field) == (4, "service.replicas") and str(MAX_REPLICAS) in err.message
    err = error("name: s\nservice:\n  replica_policy: {min_replicas: 1, max_replicas: 5000}\n")
    assert err.field == "service.replica_policy.max_replicas"
    for replicas in ({"min_replicas": MAX_REPLICAS + 1}, {"max_replicas": MAX_REPLICAS + 1}):
        with pytest.raises(ValidationError):
            ServiceSpec.model_validate({"name": "s", "replicas": replicas})
    assert (
        ServiceSpec(name="s", replicas={"min_replicas": MAX_REPLICAS}).replicas.min_replicas == MAX_REPLICAS
    )


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ('{"accelerators": [{"name": "Z9000", "count": 8}]}', "name"),
        ('{"accelerators": [{"name": "H100", "count": 1000000000000000000000000000000}]}', "count"),
        ('{"ports": [-5]}', "ports"),
        ('{"ports": [99999999]}', "ports"),
        ('{"cpus": Infinity}', "cpus"),
        ('{"memory_gib": NaN}', "memory_gib"),
        ('{"max_price_per_hour": Infinity}', "max_price_per_hour"),
    ],
)
def test_json_specs_get_the_checks_yaml_gets(resources: str, field: str) -> None:
    # a spec sent as JSON skips the loader; Infinity passed ge=0 and was then stored as null
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate_json(f'{{"name": "a", "resources": {resources}}}')
    assert field in caught.value.errors()[0]["loc"], caught.value


def test_json_accelerator_names_are_the_catalog_names() -> None:
    spec = JobSpec.model_validate_json(
        '{"name": "a", "resources": {"accelerators": [{"name": "h100", "count": 8}]}}'
    )
    assert str(spec.resources.accelerators[0]) == "H100:8"
    with pytest.raises(ValidationError, match="did you mean H100"):
        JobSpec.model_validate({"name": "a", "resources": {"accelerators": [{"name": "H1OO", "count": 1}]}})


def test_yaml_accelerator_count_has_the_same_bound() -> None:
    err = error(f"name: a\nresources:\n  accelerators: H100:{MAX_ACCELERATORS_PER_NODE + 1}\n")
    assert (err.line, err.field) == (3, "resources.accelerators")
    assert load(f"name: a\nresources:\n  accelerators: H100:{MAX_ACCELERATORS_PER_NODE}\n").spec


def test_a_stored_spec_reads_back_after_the_catalog_forgot_its_accelerator(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Submitted specs are checked once; a row written when "H100" was known (here: a name no catalog
    has, written straight into the row) still loads, or one catalog change would stop the loop."""
    from sqlalchemy import update

    from overcast.store import Store
    from overcast.store.tables import jobs

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    spec = JobSpec.model_validate(
        {"name": "old", "resources": {"accelerators": [{"name": "H100", "count": 8}]}}
    )
    record = store.submit("default", spec)
    row = spec.model_dump_json().replace('"H100"', '"Z9000"')
    with store._write() as conn:
        conn.execute(update(jobs).where(jobs.c.id == record.id).values(spec=row))
    got = store.get(record.id)
    assert got is not None and got.spec.resources.accelerators[0].name == "Z9000"
    with pytest.raises(ValidationError, match="unknown accelerator"):
        JobSpec.model_validate_json(row)  # a new submission with it is refused
    store.close()


def test_env_merged_in_from_a_top_level_merge_key_is_still_read_as_written() -> None:
    merged = "name: a\n<<: {env: {MODE: 0755, VER: 1.10}}\n"
    assert load(merged).spec.env == {"MODE": "0755", "VER": "1.10"}
    inside = "name: a\nenv:\n  <<: {MODE: 0755}\n  VER: 1.10\n"
    assert load(inside).spec.env == {"MODE": "0755", "VER": "1.10"}
