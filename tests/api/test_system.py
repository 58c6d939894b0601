"""Pools, providers, chaos through the controller; Prometheus metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from overcast.api import metrics
from overcast.api.app import create_app
from tests.api.conftest import Api


def test_pools_and_providers_come_from_the_controller(api: Api) -> None:
    pools = api.client.get("/v1/pools", headers=api.auth("ml")).json()["pools"]
    assert {p["provider"] for p in pools} == {"oci", "azure"}
    assert {"id", "capacity", "used", "health", "until", "price"} <= set(pools[0])
    names = [p["name"] for p in api.client.get("/v1/providers", headers=api.auth("ml")).json()["providers"]]
    assert sorted(names) == ["azure", "oci"]


def test_chaos_reaches_the_controller_and_bad_provider_is_400(api: Api) -> None:
    resp = api.client.post("/v1/chaos", json={"provider": "oci", "action": "down"}, headers=api.auth("ops"))
    assert resp.status_code == 200 and resp.json() == {"result": "oci: down"}
    pools = api.client.get("/v1/pools", headers=api.auth("ml")).json()["pools"]
    assert {p["health"] for p in pools if p["provider"] == "oci"} == {"down"}
    body = {"provider": "aws", "action": "capacity", "duration_s": 60}
    resp = api.client.post("/v1/chaos", json=body, headers=api.auth("ops"))
    assert resp.status_code == 400 and "unknown provider 'aws'" in resp.json()["detail"]
    resp = api.client.post("/v1/chaos", json={"provider": "oci", "action": "melt"}, headers=api.auth("ops"))
    assert resp.status_code == 422


def test_without_a_controller_capacity_endpoints_are_503(api: Api) -> None:
    with TestClient(create_app(api.store)) as bare:
        resp = bare.get("/v1/pools", headers=api.auth("ml"))
        assert resp.status_code == 503 and "no control loop" in resp.json()["detail"]


def test_metrics_count_jobs_by_state_and_submissions(api: Api) -> None:
    before = metrics.SUBMISSIONS._value.get()
    for _ in range(3):
        api.client.post("/v1/jobs", json={"name": "x"}, headers=api.auth("vision"))
    metrics.DECISION_SECONDS.observe(0.02)
    text = api.client.get("/metrics").text
    assert 'overcast_jobs{state="pending"} 3.0' in text
    assert 'overcast_jobs{state="running"} 0.0' in text
    assert f"overcast_submissions_total {before + 3}" in text
    assert "vision" not in text  # no token needed here, so no team names either
    assert "overcast_decision_seconds_bucket" in text


def test_503_when_the_database_does_not_answer(api: Api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import OperationalError

    def down() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    api.client.get("/v1/jobs", headers=api.auth("ml"))  # the token is cached from here on
    monkeypatch.setattr(api.store.engine, "connect", down)
    expected = {"detail": "the sqlite database does not answer; retry later"}
    resp = api.client.get("/healthz")
    assert resp.status_code == 503 and resp.json() == expected
    resp = api.client.get("/v1/jobs", headers=api.auth("ml"))
    assert resp.status_code == 503 and resp.json() == expected
