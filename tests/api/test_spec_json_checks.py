"""The API's two ways in, JSON and YAML, refuse the same specs (the checks live in the models)."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"name": "a", "resources": {"cpus": Infinity}}', "body.resources.cpus"),  # was stored as null
        (b'{"name": "a", "resources": {"accelerators": [{"name": "Z9000", "count": 8}]}}', "Z9000"),
        (b'{"name": "a", "resources": {"ports": [99999999]}}', "body.resources.ports"),
    ],
)
def test_json_job_is_checked_like_yaml(api: Api, body: bytes, field: str) -> None:
    headers = {**api.auth("ml"), "content-type": "application/json"}
    resp = api.client.post("/v1/jobs", content=body, headers=headers)
    assert resp.status_code == 422 and field in resp.json()["detail"], resp.text


def test_yaml_service_with_absurd_replicas_is_422(api: Api) -> None:
    text = "name: llm\nrun: x\nservice:\n  replicas: 1000000000000\n"
    resp = api.client.post("/v1/services", json={"yaml": text}, headers=api.auth("ml"))
    assert resp.status_code == 422 and "service.replicas" in resp.json()["detail"], resp.text
