"""Property: any valid spec written as overcast YAML loads back to an equal model."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overcast.catalog.accelerators import ALIASES
from overcast.spec.dump import dump_spec
from overcast.spec.loader import load_spec_text
from overcast.spec.models import (
    AcceleratorRequest,
    Autoscaling,
    JobSpec,
    ReadinessProbe,
    Resources,
    ServiceSpec,
    SpotHedge,
    SpotPolicy,
)

NAMES = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=40)
WORDS = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=16)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=60)
SCRIPT = st.one_of(st.none(), st.lists(TEXT, max_size=4).map("\n".join))
MONEY = st.floats(min_value=0.01, max_value=1e5, allow_nan=False)
SIZE = st.one_of(st.none(), st.integers(0, 4096).map(float), st.floats(0, 1e4, allow_nan=False))
PROVIDERS = st.lists(
    st.sampled_from(["aws", "azure", "gcp", "oci", "lambda", "nebius", "kubernetes"]), unique=True
)


@st.composite
def resources(draw) -> Resources:
    accelerators = tuple(
        draw(
            st.lists(
                st.builds(
                    AcceleratorRequest, name=st.sampled_from(sorted(ALIASES)), count=st.integers(1, 64)
                ),
                max_size=4,
                unique=True,
            )
        )
    )
    return Resources(
        accelerators=accelerators,
        ordered=len(accelerators) > 1 and draw(st.booleans()),  # order means nothing with one choice
        cpus=draw(SIZE),
        memory_gib=draw(SIZE),
        disk_gib=draw(SIZE),
        ports=tuple(sorted(draw(st.sets(st.integers(1, 65535), max_size=3)))),
        instance_type=draw(st.none() | WORDS),
        spot=draw(st.sampled_from(SpotPolicy)),
        providers=tuple(draw(PROVIDERS)),
        deny_providers=tuple(draw(PROVIDERS)),
        regions=tuple(draw(st.lists(WORDS, unique=True, max_size=3))),
        deny_regions=tuple(draw(st.lists(WORDS, unique=True, max_size=3))),
        zones=tuple(draw(st.lists(WORDS, unique=True, max_size=3))),
        max_price_per_hour=draw(st.none() | MONEY),
    )


ENV = st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True), TEXT, max_size=4)

jobs = st.builds(
    JobSpec,
    name=NAMES,
    resources=resources(),
    num_nodes=st.integers(1, 4096),
    setup=SCRIPT,
    run=SCRIPT,
    env=ENV,
    workdir=st.none() | WORDS,
    checkpoint_dir=st.none() | WORDS.map(lambda w: f"s3://bucket/{w}"),
    priority=st.integers(-1000, 1000),
    team=WORDS,
    max_restarts=st.integers(0, 1000),
    max_retries_on_failure=st.integers(0, 100),
    expected_hours=st.floats(0.01, 1e4, allow_nan=False),
)


@st.composite
def scaling(draw) -> Autoscaling:
    low = draw(st.integers(0, 50))
    high = draw(st.none() | st.integers(max(low, 1), 100))
    return Autoscaling(
        min_replicas=low,
        max_replicas=high,
        target_rps_per_replica=draw(st.none() | st.floats(0.01, 1e4, allow_nan=False)),
        upscale_delay_seconds=draw(st.floats(0, 3600, allow_nan=False)),
        downscale_delay_seconds=draw(st.floats(0, 3600, allow_nan=False)),
    )


services = st.builds(
    ServiceSpec,
    name=NAMES,
    resources=resources(),
    replicas=scaling(),
    readiness_probe=st.builds(
        ReadinessProbe,
        path=WORDS.map(lambda w: "/" + w),
        initial_delay_seconds=st.floats(0, 1e4, allow_nan=False),
        timeout_seconds=st.floats(0.01, 60, allow_nan=False),
        period_seconds=st.floats(0.01, 100, allow_nan=False),
    ),
    port=st.integers(1, 65535),
    setup=SCRIPT,
    run=SCRIPT,
    env=ENV,
    max_share_per_provider=st.floats(0.01, 1, allow_nan=False),
    spot_hedge=st.none()
    | st.builds(SpotHedge, base_on_demand=st.integers(0, 10), dynamic_fallback=st.booleans()),
    team=WORDS,
    priority=st.integers(-1000, 1000),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(jobs, services))
def test_model_to_yaml_to_model_is_identity(spec):
    loaded = load_spec_text(dump_spec(spec), "<roundtrip>")
    assert loaded.spec == spec
    assert loaded.warnings == []
