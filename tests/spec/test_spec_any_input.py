"""Property: whatever YAML a user writes, loading it gives a spec or a SpecError naming a line, never a
traceback (nan, inf, booleans, nested lists where names go, keys from every section in every place)."""

from __future__ import annotations

import math

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from overcast.spec import fields as F
from overcast.spec.errors import SpecError
from overcast.spec.loader import load_spec_text

KEYS = sorted({*F.TOP, *F.RESOURCES, *F.SERVICE, *F.REPLICA_POLICY, *F.READINESS_PROBE, *F.JOB_RECOVERY})
WORDS = [
    "H100:8",
    "H100:inf",
    "A100",
    "{H100: 8}",
    "aws/us-east-1",
    "k8s",
    "slurm/x",
    "4+",
    "32GB",
    "4x",
    "1-3",
    "",
    "allowed",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from([*KEYS, "H100"]), inner, max_size=4)
    ),
    max_leaves=12,
)
# the keys parsed by hand come up more often than a uniform pick of ~40 keys would give
HANDWORK = ("accelerators", "cpus", "memory", "ports", "infra", "spot", "max_hourly_cost")
RESOURCES = st.fixed_dictionaries({}, optional=dict.fromkeys(HANDWORK, VALUES)) | st.dictionaries(
    st.sampled_from(sorted(F.RESOURCES)), VALUES, max_size=5
)
SECTIONS = st.fixed_dictionaries(
    {"name": st.just("x")},
    optional={
        "resources": RESOURCES
        | st.builds(lambda base, alts: {**base, "any_of": alts}, RESOURCES, st.lists(RESOURCES)),
        "service": st.dictionaries(st.sampled_from(sorted(F.SERVICE)), VALUES, max_size=4),
        "num_nodes": VALUES,
        "env": VALUES,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example({"name": "x", "resources": {"accelerators": "H100:inf"}})  # were tracebacks
@example({"name": "x", "resources": {"accelerators": {"H100": math.nan}}})
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6) | SECTIONS)
def test_any_input_loads_or_names_the_line(data):
    try:
        load_spec_text(yaml.safe_dump(data), "any.yaml")
    except SpecError as err:
        assert all(p.line is not None for p in err.problems), err.render_all()
