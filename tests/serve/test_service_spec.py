"""The service fields of this review in YAML: readiness_probe.failure_threshold and
timeout_to_ready_seconds, and the load balancer's proxy timeouts. Loaded, dumped and read back; a wrong
value names its file, line and field."""

from __future__ import annotations

import pytest

from overcast.spec.dump import dump_spec
from overcast.spec.errors import SpecError
from overcast.spec.loader import load_spec_text
from overcast.spec.models import Proxy, ReadinessProbe

SERVICE = """\
name: llm
run: serve
service:
  readiness_probe:
    path: /health
    period_seconds: 5
    failure_threshold: 4
    timeout_to_ready_seconds: 1800
  proxy:
    connect_timeout_seconds: 2
    read_timeout_seconds: 120
    body_timeout_seconds: 3600
"""


def test_the_fields_load_and_round_trip():
    spec = load_spec_text(SERVICE, "llm.yaml").spec
    assert spec.readiness_probe == ReadinessProbe(
        path="/health", period_seconds=5, failure_threshold=4, timeout_to_ready_seconds=1800
    )
    assert spec.proxy == Proxy(connect_timeout_seconds=2, read_timeout_seconds=120, body_timeout_seconds=3600)
    assert load_spec_text(dump_spec(spec)).spec == spec
    bare = load_spec_text("name: llm\nrun: serve\nservice: {replicas: 1}\n").spec
    assert bare.readiness_probe.failure_threshold == 3 and bare.proxy.body_timeout_seconds is None


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "says"),
    [
        ("failure_threshold: 4", "failure_threshold: 0", 7, "service.readiness_probe.failure_threshold", "1"),
        ("failure_threshold: 4", "failure_threshold: true", 7, "service.readiness_probe.failure_threshold",
         "whole number"),
        ("timeout_to_ready_seconds: 1800", "timeout_to_ready_seconds: -5", 8,
         "service.readiness_probe.timeout_to_ready_seconds", "greater than 0"),
        ("read_timeout_seconds: 120", "read_timeout_seconds: soon", 11, "service.proxy.read_timeout_seconds",
         "number"),
        ("read_timeout_seconds: 120", "read_timeout: 120", 11, "service.proxy.read_timeout",
         "unknown field"),
        (SERVICE[SERVICE.index("  proxy:"):], "  proxy: 30\n", 9, "service.proxy", "mapping"),
    ],
)  # fmt: skip
def test_a_wrong_value_names_the_file_line_and_field(old, new, line, field, says):
    with pytest.raises(SpecError) as caught:
        load_spec_text(SERVICE.replace(old, new), "llm.yaml")
    err = caught.value
    assert (err.line, err.field) == (line, field)
    assert str(err).startswith(f"llm.yaml:{line}: {field}: ") and says in str(err)
