from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from overcast.catalog.fleet import Fleet, FleetError, load_fleet, parse_fleet
from tests.catalog.builders import write_fleet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GOOD = """\
reservations:
  - provider: oci
    region: us-ashburn-1
    accelerator: nvidia-h100
    gpus: 512
    price_per_gpu_hour: 2.10
    until: 2027-06-30
clusters:
  - {name: oci-hpc, slurm: {conf: /etc/slurm/slurm.conf}, nodes: 4, gpus_per_node: 8, accelerator: H100}
  - {name: azure-local, local: {}, nodes: 2, gpus_per_node: 1, accelerator: A100, price_per_gpu_hour: 2}
quotas:
  - {provider: aws, region: us-east-1, max_gpus: 256}
disabled_providers: [gcp]
spot_preemptions_per_hour: {aws: 0.2}
"""


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(FleetError) as info:
        load_fleet(write_fleet(tmp_path, text))
    return str(info.value)


def test_good_fleet(tmp_path: Path) -> None:
    fleet = load_fleet(write_fleet(tmp_path, GOOD))
    r = fleet.reservations[0]
    assert (r.provider, r.accelerator, r.gpus, r.until) == ("oci", "H100", 512, dt.date(2027, 6, 30))
    assert [c.backend for c in fleet.clusters] == ["slurm:oci-hpc", "local:azure-local"]
    assert fleet.clusters[1].node_price == 2.0
    assert fleet.disabled_providers == ["gcp"] and fleet.spot_preemptions_per_hour == {"aws": 0.2}


def test_empty_file_is_an_empty_fleet(tmp_path: Path) -> None:
    assert load_fleet(write_fleet(tmp_path, "")) == Fleet()


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("fleet*.yaml")), ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    assert load_fleet(path).clusters or load_fleet(path).reservations


def test_unknown_field_names_file_line_and_suggestion(tmp_path: Path) -> None:
    text = GOOD.replace("    gpus: 512", "    gpu: 512")
    message = _error(tmp_path, text)
    path = tmp_path / "fleet.yaml"
    assert f"{path}:5: reservations[0].gpu: unknown field (did you mean 'gpus'?)" in message
    assert f"{path}:2: reservations[0].gpus: required field is missing" in message


def test_unknown_nested_and_top_level_fields(tmp_path: Path) -> None:
    text = GOOD.replace("conf: /etc", "cnf: /etc").replace("quotas:", "quota:")
    message = _error(tmp_path, text)
    assert ":9: clusters[0].slurm.cnf: unknown field (did you mean 'conf'?)" in message
    assert ":11: quota: unknown field (did you mean 'quotas'?)" in message


def test_wrong_type_names_the_value(tmp_path: Path) -> None:
    message = _error(tmp_path, GOOD.replace("gpus: 512", "gpus: lots"))
    assert ":5: reservations[0].gpus: Input should be a valid integer" in message and "'lots'" in message


def test_unknown_accelerator_suggests(tmp_path: Path) -> None:
    message = _error(tmp_path, GOOD.replace("accelerator: nvidia-h100", "accelerator: H10"))
    assert ":4: reservations[0].accelerator: unknown accelerator 'H10' (did you mean H100" in message


def test_cluster_needs_exactly_one_backend(tmp_path: Path) -> None:
    message = _error(tmp_path, GOOD.replace("slurm: {conf: /etc/slurm/slurm.conf}, ", ""))
    assert "clusters[0]: give exactly one of 'slurm', 'kubernetes' or 'local'" in message


def test_whole_nodes_and_unique_names() -> None:
    text = "reservations: [{provider: aws, region: r, accelerator: H100, gpus: 12, gpus_per_node: 8, "
    text += "price_per_gpu_hour: 1, until: 2030-01-01}]"
    with pytest.raises(FleetError, match="not a multiple of gpus_per_node"):
        parse_fleet(text)
    twice = "{name: a, local: {}, nodes: 1, gpus_per_node: 1, accelerator: T4}"
    with pytest.raises(FleetError, match="cluster names must be unique: a"):
        parse_fleet(f"clusters: [{twice}, {twice}]")


def test_bad_yaml_and_wrong_shape_and_missing_file(tmp_path: Path) -> None:
    assert ":3: not valid YAML" in _error(tmp_path, "reservations:\n  - [unclosed\n")
    assert "a fleet file is a mapping" in _error(tmp_path, "- 1\n- 2\n")
    with pytest.raises(FleetError, match="cannot read fleet file"):
        load_fleet(tmp_path / "nope.yaml")


def test_a_key_given_twice_is_an_error_not_lost_capacity(tmp_path: Path) -> None:
    second = "clusters:\n  - {name: b, local: {}, nodes: 1, gpus_per_node: 1, accelerator: T4}\n"
    message = _error(tmp_path, GOOD + second)
    assert (
        message == f"{tmp_path / 'fleet.yaml'}:15: clusters: given twice (first on line 8, again on line 15)"
    )


def test_a_bad_date_is_one_problem_at_the_field(tmp_path: Path) -> None:
    message = _error(tmp_path, GOOD.replace("until: 2027-06-30", "until: next year"))
    assert message.count("\n") == 0, message  # not once per member of date | datetime
    assert ":7: reservations[0].until: Input should be a valid date or datetime" in message


@pytest.mark.timeout(20)
def test_nested_aliases_are_reported_short_and_fast() -> None:
    # 9**12 items in ten lines: walking or printing them once per alias use would never finish
    lines = ["quotas:", "  - &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 13)]
    with pytest.raises(FleetError) as info:
        parse_fleet("\n".join(lines) + "\n")
    assert len(str(info.value)) < 2000 and "<fleet>:2: quotas[0]: Input should be" in str(info.value)


def test_a_provider_typo_is_an_error_with_a_suggestion() -> None:
    # a typo would disable nothing, limit nothing, or reserve capacity no backend launches
    text = (
        "disabled_providers: [awz, My-Lab]\nquotas: [{provider: ocl, max_gpus: 8}]\n"
        "clusters: [{name: My-Lab, local: {}, nodes: 1, gpus_per_node: 1, accelerator: T4}]\n"
        "reservations: [{provider: zzz, region: r, accelerator: H100, gpus: 8, price_per_gpu_hour: 1,"
        " until: 2030-01-01}]\n"
    )
    with pytest.raises(FleetError) as info:
        parse_fleet(text)
    assert str(info.value).splitlines() == [
        "<fleet>:1: disabled_providers[0]: unknown provider 'awz' (did you mean aws?)",
        "<fleet>:2: quotas[0].provider: unknown provider 'ocl' (did you mean local, oci?)",
        "<fleet>:4: reservations[0].provider: unknown provider 'zzz': not a provider overcast knows nor a "
        "cluster here",
    ]


AWS = """\
aws:
  - name: use1
    region: us-east-1
    instance_types: [p5.48xlarge, p4d.24xlarge]
    image_id: ami-0123456789abcdef0
    max_nodes: 4
    endpoint_url: http://127.0.0.1:5000
"""


def test_an_aws_account_entry_and_its_mistakes_by_file_line_and_field(tmp_path: Path) -> None:
    (account,) = load_fleet(write_fleet(tmp_path, AWS)).aws
    assert (account.name, account.region, account.max_nodes) == ("use1", "us-east-1", 4)
    assert account.instance_types == ["p5.48xlarge", "p4d.24xlarge"]
    assert account.purchases == ["on-demand", "spot"]
    bad = (
        AWS.replace("p4d.24xlarge", "p4d.24xlarg")
        .replace("max_nodes: 4", "max_nodes: 0")
        .replace("image_id: ami-0123456789abcdef0", "image: ami-0123456789abcdef0")
        .replace("http://127", "127")
    )
    path = tmp_path / "fleet.yaml"
    assert _error(tmp_path, bad).splitlines() == [
        f"{path}:2: aws[0].image_id: required field is missing",
        f"{path}:4: aws[0].instance_types: no AWS offer for 'p4d.24xlarg' in us-east-1 in the catalog "
        "(did you mean p4d.24xlarge, p4de.24xlarge, p3dn.24xlarge?)",
        f"{path}:5: aws[0].image: unknown field (did you mean 'image_id'?)",
        f"{path}:6: aws[0].max_nodes: Input should be greater than 0 (got 0)",
        f"{path}:7: aws[0].endpoint_url: String should match pattern '^https?://' (got '127.0.0.1:5000')",
    ]
    with pytest.raises(FleetError, match="aws names must be unique: use1"):
        parse_fleet(AWS + AWS.removeprefix("aws:\n"))
    assert "unknown purchase option 'sport'" in _error(tmp_path, AWS + "    purchases: [spot, sport]\n")


OCI = """\
oci:
  - name: iad
    region: us-ashburn-1
    compartment_id: ocid1.compartment.oc1..aaaa
    shapes: [BM.GPU.H100.8, BM.GPU.A100-v2.8]
    image_id: ocid1.image.oc1.iad.aaaa
    subnet_id: ocid1.subnet.oc1.iad.aaaa
    max_nodes: 2
"""


def test_an_oci_entry_and_its_mistakes_by_file_line_and_field(tmp_path: Path) -> None:
    (account,) = load_fleet(write_fleet(tmp_path, OCI)).oci
    assert (account.name, account.region, account.max_nodes) == ("iad", "us-ashburn-1", 2)
    assert account.shapes == ["BM.GPU.H100.8", "BM.GPU.A100-v2.8"] and account.endpoint is None
    assert account.compute_clusters  # RDMA gangs in compute clusters unless the entry says otherwise
    off = load_fleet(write_fleet(tmp_path, OCI + "    compute_clusters: false\n")).oci[0]
    assert not off.compute_clusters
    from overcast.backends.oci_client import OciSettings
    from overcast.control.setup import _settings

    assert _settings(OciSettings, off, tmp_path).compute_clusters is False
    bad = (
        OCI.replace("BM.GPU.H100.8", "BM.GPU.H100.9")
        .replace("ocid1.image", "ami")
        .replace("subnet_id:", "subnet:")
    )
    path = tmp_path / "fleet.yaml"
    assert _error(tmp_path, bad).splitlines() == [
        f"{path}:2: oci[0].subnet_id: required field is missing",
        f"{path}:5: oci[0].shapes: no OCI offer for shape 'BM.GPU.H100.9' in us-ashburn-1 in the catalog "
        "(did you mean BM.GPU.H100.8, BM.GPU.H200.8, BM.GPU.A10.4?)",
        f"{path}:6: oci[0].image_id: String should match pattern '^ocid1\\.image\\.' "
        "(got 'ami.oc1.iad.aaaa')",
        f"{path}:7: oci[0].subnet: unknown field (did you mean 'subnet_id'?)",
    ]
    with pytest.raises(FleetError, match="oci names must be unique: iad"):
        parse_fleet(OCI + OCI.removeprefix("oci:\n"))


AZURE = """\
azure:
  - name: eus
    subscription_id: 00000000-0000-0000-0000-00000000c0de
    resource_group: overcast-rg
    region: eastus
    zones: ["1", "2"]
    vm_sizes: [Standard_ND96isr_H100_v5]
    image: microsoft-dsvm:ubuntu-hpc:2204:latest
    subnet_id: /subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/n
    identity_id: /subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i
"""  # noqa: E501 (a resource id)


def test_an_azure_entry_and_its_mistakes_by_file_line_and_field(tmp_path: Path) -> None:
    (account,) = load_fleet(write_fleet(tmp_path, AZURE)).azure
    assert (account.name, account.region, account.zones) == ("eus", "eastus", ["1", "2"])
    assert account.vm_sizes == ["Standard_ND96isr_H100_v5"] and account.endpoint is None
    bad = (
        AZURE.replace("ND96isr_H100_v5", "ND96isr_H100_v6")
        .replace("microsoft-dsvm:ubuntu-hpc:2204:latest", "ubuntu")
        .replace("identity_id:", "identity:")
    )
    path = tmp_path / "fleet.yaml"
    assert _error(tmp_path, bad).splitlines() == [
        f"{path}:2: azure[0].identity_id: required field is missing",
        f"{path}:7: azure[0].vm_sizes: no Azure offer for VM size 'Standard_ND96isr_H100_v6' in eastus in "
        "the catalog (did you mean Standard_ND96isr_H100_v5, Standard_ND96amsr_A100_v4, "
        "Standard_NC96ads_A100_v4?)",
        f"{path}:8: azure[0].image: String should match pattern "
        "'^(/subscriptions/.+|[^:]+:[^:]+:[^:]+:[^:]+)$' (got 'ubuntu')",
        f"{path}:10: azure[0].identity: unknown field (did you mean 'identity_id'?)",
    ]
    with pytest.raises(FleetError, match="azure names must be unique: eus"):
        parse_fleet(AZURE + AZURE.removeprefix("azure:\n"))
    assert "unknown purchase option 'sport'" in _error(tmp_path, AZURE + "    purchases: [spot, sport]\n")


def test_each_cluster_kind_gets_the_pool_id_its_backend_uses() -> None:
    from overcast.catalog.pools import cluster_pool

    fleet = parse_fleet(
        "clusters:\n"
        "  - {name: a, slurm: {conf: /s.conf}, nodes: 2, gpus_per_node: 8, accelerator: H100}\n"
        "  - {name: b, kubernetes: {api: ctx, namespace: ml}, nodes: 2, gpus_per_node: 8, accelerator: L4}\n"
        "  - {name: c, local: {}, nodes: 1, gpus_per_node: 1, accelerator: T4}\n"
    )
    pools = [cluster_pool(c) for c in fleet.clusters]
    assert [(p.id, p.backend) for p in pools] == [
        ("slurm/a", "slurm:a"), ("kubernetes/b", "kubernetes:b"), ("local/c", "local:c"),
    ]  # fmt: skip
    assert pools[1].labels == {"kubernetes": "true", "namespace": "ml"} and pools[1].region == "b"


LAMBDA = """\
lambda:
  - name: tx
    region: us-south-1
    instance_types: [gpu_8x_h100_sxm5]
    ssh_key_name: overcast
    max_nodes: 2
"""


def test_a_lambda_entry_and_its_mistakes_by_file_line_and_field(tmp_path: Path) -> None:
    # ``lambda`` is a Python keyword: the field is ``lambda_``, the file says ``lambda:``
    (account,) = load_fleet(write_fleet(tmp_path, LAMBDA)).lambda_
    assert (account.name, account.region, account.max_nodes) == ("tx", "us-south-1", 2)
    assert (account.api_key_env, account.api_key_file, account.endpoint) == ("LAMBDA_API_KEY", None, None)
    bad = (
        LAMBDA.replace("sxm5", "sxm9")
        .replace("ssh_key_name: overcast", "ssh_key: overcast")
        .replace("max_nodes: 2", "max_nodes: 2\n    api_key_env: 'not a name'")
    )
    path = tmp_path / "fleet.yaml"
    assert _error(tmp_path, bad).splitlines() == [
        f"{path}:2: lambda[0].ssh_key_name: required field is missing",
        f"{path}:4: lambda[0].instance_types: no Lambda offer for instance type 'gpu_8x_h100_sxm9' in "
        "us-south-1 in the catalog (did you mean gpu_8x_h100_sxm5, gpu_4x_h100_sxm5, gpu_2x_h100_sxm5?)",
        f"{path}:5: lambda[0].ssh_key: unknown field (did you mean 'ssh_key_name'?)",
        f"{path}:7: lambda[0].api_key_env: String should match pattern '^[A-Za-z_][A-Za-z0-9_]*$' "
        "(got 'not a name')",
    ]
    with pytest.raises(FleetError, match="lambda names must be unique: tx"):
        parse_fleet(LAMBDA + LAMBDA.removeprefix("lambda:\n"))
    with pytest.raises(FleetError, match=r"lambda\[0\]\.api_key: unknown field \(did you mean 'api_key_env'"):
        parse_fleet(LAMBDA + "    api_key: secret\n")  # the key itself never goes in the fleet file


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("https://cloud.lambda.ai", True),
        ("https://proxy.internal:8443/lambda", True),
        ("http://127.0.0.1:8080", True),  # the tests' fake, on loopback
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("http://cloud.lambda.ai", False),  # the account-wide key in cleartext from every node
        ("http://10.0.0.5:8080", False),
        ("ftp://cloud.lambda.ai", False),
        ("https://", False),
    ],
)
def test_a_lambda_endpoint_is_https_except_on_loopback(tmp_path: Path, endpoint: str, ok: bool) -> None:
    text = LAMBDA + f"    endpoint: '{endpoint}'\n"
    if ok:
        assert load_fleet(write_fleet(tmp_path, text)).lambda_[0].endpoint == endpoint
    else:
        message = _error(tmp_path, text)
        assert f"{tmp_path / 'fleet.yaml'}:7: lambda[0].endpoint: " in message, message
        assert "https" in message and endpoint in message


NEBIUS = """\
nebius:
  - name: fi
    project_id: project-e00abc
    region: eu-north1
    instance_types: [gpu-h100-sxm_8gpu-128vcpu-1600gb]
    subnet_id: vpcsubnet-e00abc
    infiniband_fabric: fabric-2
    service_account_id: serviceaccount-e00abc
"""


def test_a_nebius_entry_and_its_mistakes_by_file_line_and_field(tmp_path: Path) -> None:
    (account,) = load_fleet(write_fleet(tmp_path, NEBIUS)).nebius
    assert (account.name, account.region, account.infiniband_fabric) == ("fi", "eu-north1", "fabric-2")
    assert (account.purchases, account.token_endpoint, account.insecure) == (
        ["on-demand", "spot"],
        None,
        False,
    )
    bad = (
        NEBIUS.replace("sxm_8gpu", "sxm_9gpu")
        .replace("project-e00abc", "e00abc")
        .replace("subnet_id: vpcsubnet-e00abc", "subnet: vpcsubnet-e00abc")
    )
    path = tmp_path / "fleet.yaml"
    assert _error(tmp_path, bad).splitlines() == [
        f"{path}:2: nebius[0].subnet_id: required field is missing",
        f"{path}:3: nebius[0].project_id: String should match pattern '^project-[a-z0-9]+$' (got 'e00abc')",
        f"{path}:5: nebius[0].instance_types: no Nebius offer for instance type "
        "'gpu-h100-sxm_9gpu-128vcpu-1600gb' in eu-north1 in the catalog (did you mean "
        "gpu-h100-sxm_8gpu-128vcpu-1600gb, gpu-h200-sxm_8gpu-128vcpu-1600gb, "
        "gpu-h100-sxm_1gpu-16vcpu-200gb?)",
        f"{path}:6: nebius[0].subnet: unknown field (did you mean 'subnet_id'?)",
    ]
    with pytest.raises(FleetError, match="nebius names must be unique: fi"):
        parse_fleet(NEBIUS + NEBIUS.removeprefix("nebius:\n"))


def test_a_nebius_entry_needs_the_nodes_service_account(tmp_path: Path) -> None:
    # without it no node gets an identity: its agent never starts and the gang bills for 20 minutes
    text = NEBIUS.replace("    service_account_id: serviceaccount-e00abc\n", "")
    message = _error(tmp_path, text)
    assert f"{tmp_path / 'fleet.yaml'}:2: nebius[0].service_account_id: required field is missing" in message
    assert "service_account_id" in _error(tmp_path, text + "    service_account_id: ''\n")


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("127.0.0.1:50051", True),  # the tests' fake
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("api.eu-north1.nebius.cloud:443", False),  # the controller's token in cleartext
        ("10.0.0.5:50051", False),
        (None, False),  # the SDK's own resolution: Nebius itself
    ],
)
def test_a_nebius_insecure_endpoint_is_loopback_only(tmp_path: Path, endpoint: str | None, ok: bool) -> None:
    text = NEBIUS + "    insecure: true\n" + (f"    endpoint: '{endpoint}'\n" if endpoint else "")
    if ok:
        assert load_fleet(write_fleet(tmp_path, text)).nebius[0].insecure
    else:
        message = _error(tmp_path, text)
        assert "nebius[0]" in message and "insecure: true needs an endpoint on a loopback host" in message
        assert str(endpoint) in message
