"""Property-based: requests generated from the app's own OpenAPI schema never get a 5xx (both databases)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.api.conftest import Api, make_api


@pytest.fixture
def fuzz_api(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """On SQLite and on PostgreSQL: only PostgreSQL refuses some values (NUL, over-long text)."""
    yield from make_api(store_url, tmp_path_factory.mktemp("logs"))


@pytest.fixture
def openapi(fuzz_api: Api) -> schemathesis.schemas.BaseSchema:
    fuzz_api.client.post("/v1/jobs", json={"name": "seed"}, headers=fuzz_api.auth("ml"))
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_api.client.app)


schema = schemathesis.pytest.from_fixture("openapi")


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_server_errors(case: schemathesis.Case, fuzz_api: Api) -> None:
    token = fuzz_api.tokens["ops" if case.path == "/v1/chaos" else "ml"]
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])


def test_openapi_lists_every_endpoint(tmp_path: Path) -> None:
    for api in make_api(f"sqlite:///{tmp_path / 'x.db'}", tmp_path):
        paths = set(api.client.get("/openapi.json").json()["paths"])
    assert {
        "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/logs", "/v1/events",
        "/v1/pools", "/v1/providers", "/v1/chaos", "/healthz", "/metrics",
    } <= paths  # fmt: skip
