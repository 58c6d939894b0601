"""SkyPilot task files load unchanged: every accelerator form, infra, sizes, recovery, services."""

from __future__ import annotations

import pytest

from overcast.spec.loader import parse_accelerators
from overcast.spec.models import AcceleratorRequest, JobSpec, ServiceSpec, SpotPolicy
from tests.spec.helpers import error, load


def acc(*pairs: tuple[str, int]) -> tuple[AcceleratorRequest, ...]:
    return tuple(AcceleratorRequest(name=n, count=c) for n, c in pairs)


@pytest.mark.parametrize(
    ("text", "expected", "ordered"),
    [
        ("H100:8", acc(("H100", 8)), False),
        ("H100", acc(("H100", 1)), False),
        ("h100-sxm:8", acc(("H100", 8)), False),
        ("{H100: 8}", acc(("H100", 8)), False),
        ("{A100:1, V100:1}", acc(("A100", 1), ("V100", 1)), False),  # SkyPilot's set form
        ("{A100-80GB: 8, H100: 8}", acc(("A100-80GB", 8), ("H100", 8)), False),
        ("[L4:1, H100:1, A100:1]", acc(("L4", 1), ("H100", 1), ("A100", 1)), True),  # list: ordered
        ("['A100-80GB:8']", acc(("A100-80GB", 8)), False),
    ],
)
def test_every_accelerator_form(text, expected, ordered):
    spec = load(f"name: x\nresources:\n  accelerators: {text}\n").spec
    assert spec.resources.accelerators == expected
    assert spec.resources.ordered is ordered


def test_parse_accelerators_public_function():
    assert parse_accelerators("A100-80GB:8") == acc(("A100-80GB", 8))
    assert parse_accelerators({"H100": 8, "H200": 8}) == acc(("H100", 8), ("H200", 8))
    assert parse_accelerators(None) == ()
    with pytest.raises(ValueError, match="unknown accelerator 'Q999'"):
        parse_accelerators("Q999:8")


@pytest.mark.parametrize(
    ("infra", "providers", "regions", "zones"),
    [
        ("aws", ("aws",), (), ()),
        ("aws/us-east-1", ("aws",), ("us-east-1",), ()),
        ("aws/us-east-1/us-east-1a", ("aws",), ("us-east-1",), ("us-east-1a",)),
        ("aws/*/us-east-1a", ("aws",), (), ("us-east-1a",)),
        ("*/us-east-1", (), ("us-east-1",), ()),
        ("k8s", ("kubernetes",), (), ()),
        ("k8s/ctx", ("kubernetes",), ("ctx",), ()),
        (
            "kubernetes/arn:aws:eks:us-east-1:1:cluster/a",
            ("kubernetes",),
            ("arn:aws:eks:us-east-1:1:cluster/a",),
            (),
        ),
        ("slurm/oci-hpc", ("oci-hpc",), (), ()),  # a cluster's pools carry its name as provider
        ("do/nyc3", ("digitalocean",), ("nyc3",), ()),
    ],
)
def test_infra_forms(infra, providers, regions, zones):
    loaded = load(f"name: x\nresources:\n  infra: '{infra}'\n")
    res = loaded.spec.resources
    assert (res.providers, res.regions, res.zones) == (providers, regions, zones)
    assert loaded.warnings == []


@pytest.mark.parametrize("infra", ["slurm", "slurm/oci-hpc/gpu", "aws/a/b/c", "aws//x"])
def test_infra_that_cannot_be_expressed_is_an_error(infra):
    err = error(f"name: x\nresources:\n  infra: '{infra}'\n")
    assert (err.line, err.field) == (3, "resources.infra")


def test_every_catalog_provider_is_known():
    from overcast.catalog.load import load_offers
    from overcast.spec.infra import KNOWN_PROVIDERS

    assert {offer.provider for offer in load_offers()} <= set(KNOWN_PROVIDERS)


def test_legacy_cloud_region_zone():
    res = load(
        "name: x\nresources:\n  cloud: GCP\n  region: us-central1\n  zone: us-central1-a\n"
    ).spec.resources
    assert (res.providers, res.regions, res.zones) == (("gcp",), ("us-central1",), ("us-central1-a",))


def test_sizes_ports_instance_type_and_per_node_price():
    spec = load(
        """
        name: x
        num_nodes: 4
        resources:
          cpus: 8+
          memory: 4x
          disk_size: 1TB
          ports: [8080, 10022-10024]
          instance_type: p5.48xlarge
          max_hourly_cost: 10.5
        """
    ).spec
    res = spec.resources
    assert (res.cpus, res.memory_gib, res.disk_gib) == (8, 32, 1024)
    assert res.ports == (8080, 10022, 10023, 10024)
    assert res.instance_type == "p5.48xlarge"
    assert res.max_price_per_hour == pytest.approx(42.0)  # SkyPilot's cap is per node
    assert load("name: x\nresources:\n  memory: 64GB\n").spec.resources.memory_gib == 64
    assert error("name: x\nresources:\n  memory: 4x\n").field == "resources.memory"  # 4x needs cpus


def test_spot_and_job_recovery():
    loaded = load(
        """
        name: x
        resources:
          accelerators: A100:8
          use_spot: true
          job_recovery:
            strategy: FAILOVER
            max_restarts_on_errors: 3
            recover_on_exit_codes: [33]
        """
    )
    assert isinstance(loaded.spec, JobSpec)
    assert loaded.spec.resources.spot is SpotPolicy.REQUIRED
    assert loaded.spec.max_retries_on_failure == 3
    assert [w.split(": ")[1] for w in loaded.warnings] == [
        "resources.job_recovery.strategy",
        "resources.job_recovery.recover_on_exit_codes",
    ]
    assert load("name: x\nresources:\n  job_recovery: none\n").warnings[0].startswith("job.yaml:3:")


def test_any_of_over_accelerators_and_ordered_over_accelerators():
    res = load(
        "name: x\nresources:\n  any_of:\n    - accelerators: A100-80GB:8\n    - accelerators: H100:8\n"
    ).spec.resources
    assert res.accelerators == acc(("A100-80GB", 8), ("H100", 8)) and not res.ordered
    res = load(
        "name: x\nresources:\n  ordered:\n    - accelerators: H100:8\n    - accelerators: A100:8\n"
    ).spec.resources
    assert res.accelerators == acc(("H100", 8), ("A100", 8)) and res.ordered


def test_a_shared_accelerator_list_stays_ordered_across_locations():
    res = load(
        """
        name: x
        resources:
          accelerators: [H100:8, A100:8]
          any_of:
            - infra: aws
            - infra: gcp
        """
    )
    assert res.spec.resources.ordered and res.spec.resources.providers == ("aws", "gcp")


def test_any_of_over_spot_means_spot_allowed():
    res = load(
        "name: x\nresources:\n  accelerators: H100:8\n  any_of:\n    - use_spot: true\n    - use_spot: no\n"
    )
    assert res.spec.resources.spot is SpotPolicy.ALLOWED


def test_any_of_entries_inherit_and_override_the_base():
    res = load(
        """
        name: x
        resources:
          accelerators: H100:8
          cpus: 32+
          any_of:
            - infra: aws/us-east-1
            - infra: gcp/us-central1
              cpus: 32
        """
    ).spec.resources
    assert res.cpus == 32 and res.providers == ("aws", "gcp") and res.regions == ("us-east-1", "us-central1")


def test_alternatives_that_would_lose_their_pairing_are_errors():
    err = error(
        """
        name: x
        resources:
          any_of:
            - {accelerators: H100:8, infra: aws}
            - {accelerators: A100:8, infra: gcp}
        """
    )
    assert (err.line, err.field) == (3, "resources.any_of")
    assert "accelerators and infra" in err.message
    assert "differ in cpus" in error("name: x\nresources:\n  any_of:\n    - cpus: 4\n    - cpus: 8\n").message
    mixed = error("name: x\nresources:\n  any_of:\n    - infra: aws\n    - infra: gcp/us-central1\n")
    assert "regions" in mixed.message
    cpu_or_gpu = error("name: x\nresources:\n  any_of:\n    - accelerators: H100:1\n    - {}\n")
    assert "others for none" in cpu_or_gpu.message


def test_merged_locations_may_not_admit_places_no_alternative_named():
    # aws and lambda both sell in us-east-1 and us-west-2: one provider list and one region list would
    # let the job run on aws/us-east-1, which the user never offered
    err = error("name: x\nresources:\n  any_of:\n    - infra: aws/us-west-2\n    - infra: lambda/us-east-1\n")
    assert (err.line, err.field) == (3, "resources.any_of")
    assert "would also allow aws/us-east-1, lambda/us-west-2, which none" in err.message
    # the same shape is fine where the crossed pairs are not places the catalog sells
    fine = load("name: x\nresources:\n  any_of:\n    - infra: aws/us-east-1\n    - infra: gcp/us-east4\n")
    assert fine.spec.resources.regions == ("us-east-1", "us-east4")
    k8s = load("name: x\nresources:\n  any_of:\n    - infra: k8s/a\n    - infra: aws/b\n")
    assert k8s.spec.resources.providers == ("kubernetes", "aws")


def test_base_keys_are_reported_once_however_many_alternatives():
    loaded = load("name: x\nresources:\n  cloud: awz\n  any_of:\n    - region: a\n    - region: b\n")
    assert len(loaded.warnings) == 1
    err = error("name: x\nresources:\n  cpus: lots\n  any_of:\n    - region: a\n    - region: b\n")
    assert len(err.problems) == 1 and err.line == 3


def test_service_file():
    loaded = load(
        """
        service:
          readiness_probe:
            path: /v1/models
            initial_delay_seconds: 600
            post_data: {model: m}
          replica_policy:
            min_replicas: 1
            max_replicas: 5
            target_qps_per_replica: 2.5
            upscale_delay_seconds: 60
            downscale_delay_seconds: 900
            base_ondemand_fallback_replicas: 1
            dynamic_ondemand_fallback: true
        resources:
          accelerators: L4:1
          use_spot: true
          ports: 8000
        run: vllm serve m
        """,
        source="/srv/specs/vllm.yaml",
    )
    spec = loaded.spec
    assert isinstance(spec, ServiceSpec)
    assert spec.name == "vllm"  # from the file name, as SkyPilot does
    assert spec.readiness_probe.path == "/v1/models" and spec.readiness_probe.initial_delay_seconds == 600
    assert (spec.replicas.min_replicas, spec.replicas.max_replicas) == (1, 5)
    assert spec.replicas.target_rps_per_replica == 2.5
    assert (spec.replicas.upscale_delay_seconds, spec.replicas.downscale_delay_seconds) == (60, 900)
    assert spec.spot_hedge is not None
    assert (spec.spot_hedge.base_on_demand, spec.spot_hedge.dynamic_fallback) == (1, True)
    assert spec.port == 8000
    assert loaded.warnings == [
        "/srv/specs/vllm.yaml:5: service.readiness_probe.post_data: not acted on: probes are GET requests"
    ]


def test_service_fixed_replicas_and_probe_string():
    spec = load("name: s\nservice:\n  readiness_probe: /health\n  replicas: 3\n  ports: 9000\n").spec
    assert isinstance(spec, ServiceSpec)
    assert (spec.replicas.min_replicas, spec.replicas.max_replicas, spec.port) == (3, 3, 9000)
    assert spec.readiness_probe.path == "/health" and spec.spot_hedge is None


def test_harmless_unsupported_fields_are_warnings_naming_them():
    loaded = load(
        """
        name: x
        workdir: ~/code
        resources:
          accelerators: H100:8
          labels: {team: a}
          disk_tier: high
          autostop: 10m
          image_id: docker:pytorch/pytorch
        envs:
          A: 1
          B: null
        secrets:
          HF_TOKEN: abc
        file_mounts:
          /data: s3://bucket
        config:
          kubernetes: {provision_timeout: 600}
        """
    )
    fields = [w.split(": ")[1] for w in loaded.warnings]
    assert fields == [
        "resources.labels",
        "resources.disk_tier",
        "resources.autostop",
        "resources.image_id",
        "envs.B",
        "secrets",
        "file_mounts",
        "config",
    ]
    assert loaded.spec.env == {"A": "1"} and loaded.spec.workdir == "~/code"


def test_per_region_image_limits_regions():
    loaded = load(
        "name: x\nresources:\n  cloud: aws\n  image_id:\n    us-east-1: ami-1\n    us-west-2: ami-2\n"
    )
    assert loaded.spec.resources.regions == ("us-east-1", "us-west-2")
    assert len(loaded.warnings) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("resources:\n  accelerator_args: {tpu_vm: true}\n", "resources.accelerator_args"),
        ("resources:\n  network_tier: best\n", "resources.network_tier"),
        ("resources:\n  local_disk: nvme\n", "resources.local_disk"),
        ("volumes: {data: {size: 100Gi}}\n", "volumes"),
        ("pool: {workers: 2}\n", "pool"),
        ("service:\n  pool: {workers: 2}\n", "service.pool"),
    ],
)
def test_placement_changing_fields_overcast_cannot_honour_are_errors(body, field):
    err = error("name: x\n" + body)
    assert (err.field, err.line) == (field, 1 + body.count("\n"))
    assert err.message.startswith("not supported")


def test_unknown_provider_is_a_warning_with_a_suggestion():
    loaded = load("name: x\nresources:\n  cloud: awz\n")
    assert loaded.warnings == [
        "job.yaml:3: resources.cloud: provider 'awz' is not one overcast knows (did you mean aws?)"
    ]
