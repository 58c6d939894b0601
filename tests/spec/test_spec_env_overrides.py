"""`overcast launch --env`: values given at launch win over the file's env and fill its null entries."""

from __future__ import annotations

from overcast.spec.loader import load_spec_text

FILE = "name: a\nenv:\n  GREETING: from-file\n  TOKEN: null\n  KEEP: '010'\n"


def test_launch_values_override_fill_and_add() -> None:
    loaded = load_spec_text(FILE, "job.yaml", {"GREETING": "hi", "TOKEN": "t0k", "EXTRA": "1"})
    assert loaded.spec.env == {"GREETING": "hi", "TOKEN": "t0k", "KEEP": "010", "EXTRA": "1"}
    assert loaded.warnings == []  # TOKEN was given: no "left unset"


def test_without_launch_values_a_null_entry_is_left_unset_and_says_how_to_give_it() -> None:
    loaded = load_spec_text(FILE, "job.yaml")
    assert loaded.spec.env == {"GREETING": "from-file", "KEEP": "010"}
    assert loaded.warnings == ["job.yaml:4: env.TOKEN: has no value and is left unset (give it with "
                               "`overcast launch --env TOKEN=`)"]  # fmt: skip


def test_a_file_without_env_gets_the_launch_values() -> None:
    assert load_spec_text("name: a\n", "job.yaml", {"A": "1"}).spec.env == {"A": "1"}
    assert load_spec_text("name: a\n", "job.yaml").spec.env == {}
