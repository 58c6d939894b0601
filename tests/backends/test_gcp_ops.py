"""How the GCP backend waits for Compute operations and classifies Compute's errors, against the fake of
tests/fixtures/gcp_fake.py (whose ``operations.wait`` holds the request like GCP's)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as gexc

from overcast.backends import gcp_client
from overcast.backends.base import CapacityError, LaunchRequest, ProviderDown
from overcast.backends.gcp_client import translate
from tests.backends.cloud_checks import eventually
from tests.backends.gcp_vm import GceVmEmulator
from tests.backends.test_gcp import ZB, backend_of, gpu_job, pool_of
from tests.fixtures.gcp_fake import FakeGce
from tests.fixtures.gcp_http import gce, gce_server  # noqa: F401


def test_a_bulk_insert_slower_than_one_wait_read_is_waited_for_not_rolled_back(
    gce: FakeGce,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # scaled down: GCP holds a wait about 120 s and a bulkInsert may take minutes; here the client stops
    # listening after 0.4 s while the server holds 5 s and the operations take 1.2 s
    monkeypatch.setattr(gcp_client, "TIMEOUT", 0.4)
    monkeypatch.setattr(gcp_client, "WAIT_READ_SECONDS", 0.4, raising=False)
    monkeypatch.setattr(gce, "wait_hold_seconds", 5.0)
    backend = backend_of(gce, tmp_path)
    pool = pool_of(backend, ZB)
    monkeypatch.setattr(gce, "op_seconds", 1.2)
    started = time.monotonic()
    allocation = backend.launch(LaunchRequest("slow", 1, pool, 2, gpu_job("slow", "true")))
    assert time.monotonic() - started >= 2.0  # the placement policy, then the bulkInsert
    assert len(allocation.handle.split(",")) == 2
    assert sorted(i["name"] for i in gce.listed()) == allocation.handle.split(",")
    assert not any(i.get("deleting") for i in gce.listed())  # not rolled back
    assert backend.poll() == [] and backend.active() == [("slow", 1)]


def test_a_restart_during_a_bulk_insert_neither_reports_nor_forgets_the_gang(
    gce: FakeGce,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gce, "bulk_seconds", 2.0)
    old = backend_of(gce, tmp_path)
    request = LaunchRequest("r", 3, pool_of(old, ZB), 2, gpu_job("r", "sleep 60"))
    threading.Thread(target=old.launch, args=(request,), daemon=True).start()  # the loop dies mid-wait
    time.sleep(0.7)
    new = backend_of(gce, tmp_path)  # the next leader's backend, same state folder
    assert gce.listed() == [] and new.active() == [("r", 3)]
    assert new.poll() == []  # not PREEMPTED: the bulkInsert still runs
    new.stop("r", 3, 0.0)  # the loop gave up on it meanwhile: whatever it creates must go
    assert new.poll() == [] and "r--3" in json.loads((new.dir / "acked.json").read_text())["launched"]
    assert eventually(lambda: len(gce.listed()) == 2, timeout=5.0)  # GCP created the gang after all
    assert eventually(lambda: new.poll() == [] and gce.listed() == [] and not gce.policies, timeout=5.0)
    assert json.loads((new.dir / "acked.json").read_text())["launched"] == {}
    assert new.active() == []


def http_error(status: int, reason: str, message: str) -> Exception:
    """The SDK's exception for an error response with Google's JSON error body."""
    response = requests.Response()
    response.status_code = status
    response.request = requests.Request("POST", "https://compute.googleapis.com/compute/v1/x").prepare()
    errors = [{"message": message, "domain": "usageLimits", "reason": reason}]
    response._content = json.dumps({"error": {"code": status, "message": message, "errors": errors}}).encode()
    return gexc.from_http_response(response)


def test_the_apis_own_request_quota_is_an_outage_and_a_resource_quota_is_capacity() -> None:
    metric = "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service "
    rate = http_error(
        403, "rateLimitExceeded", metric + "'compute.googleapis.com' for consumer 'project_number:1'."
    )
    assert isinstance(translate("list instances", rate), ProviderDown)
    gpus = http_error(
        403, "quotaExceeded", "Quota 'NVIDIA_H100_GPUS' exceeded.  Limit: 8.0 in region us-central1."
    )
    assert isinstance(translate("bulk insert", gpus), CapacityError)
    worded = http_error(403, "forbiddenQuota", "Quota 'CPUS' exceeded.")  # only the wording says quota
    assert isinstance(translate("bulk insert", worded), CapacityError)


def test_instances_get_a_service_account_and_one_without_gets_no_token_from_its_metadata(
    gce: FakeGce,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = backend_of(gce, tmp_path)
    backend.launch(LaunchRequest("d", 1, pool_of(backend, ZB), 1, gpu_job("d", "true", 1)))
    accounts = gce.bulk_inserts[-1]["instanceProperties"]["serviceAccounts"]
    assert accounts == [{"email": "default", "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]
    other = backend_of(gce, tmp_path / "sa", name="sa", service_account="node@p.iam.gserviceaccount.com")
    other.launch(LaunchRequest("e", 1, pool_of(other, ZB), 1, gpu_job("e", "true", 1)))
    assert gce.bulk_inserts[-1]["instanceProperties"]["serviceAccounts"][0]["email"].startswith("node@")
    # the emulator's metadata server, like GCP's: a token only for an instance with a service account
    body = dict(gce.bulk_inserts[-1])
    body["instanceProperties"] = {
        k: v for k, v in body["instanceProperties"].items() if k != "serviceAccounts"
    }
    body["perInstanceProperties"] = {"bare-0": {"name": "bare-0"}}
    gce.bulk_insert(ZB, body, None)
    assert eventually(lambda: gce.find("bare-0") is not None)
    emulator = GceVmEmulator(gce, tmp_path / "vms").start()
    try:
        base = emulator.imds_url
        token = "computeMetadata/v1/instance/service-accounts/default/token"

        def get(vm: str) -> int:
            request = urllib.request.Request(f"{base}/{vm}/{token}", headers={"Metadata-Flavor": "Google"})
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert get("bare-0") == 404
        assert get(gce.listed()[0]["name"]) == 200
    finally:
        emulator.close()
