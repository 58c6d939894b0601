"""Bearer tokens: 401 with a clear message for missing/unknown tokens; never 403 to hide a job."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing token"),
        ({"Authorization": "Bearer oc_0000_nope"}, "unknown or invalid token"),
        ({"Authorization": "Bearer garbage"}, "unknown or invalid token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing token"),
        ({"Authorization": "Bearer oc_0123456789abcdef_" + "a" * 10_000}, "unknown or invalid token"),
    ],
)
def test_unknown_or_missing_token_is_401(api: Api, headers: dict[str, str], message: str) -> None:
    for method, path in [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/events"),
        ("GET", "/v1/pools"),
    ]:
        resp = api.client.request(method, path, headers=headers, json={"name": "x"})
        assert resp.status_code == 401, (method, path)
        assert message in resp.json()["detail"]
        assert resp.headers["www-authenticate"] == "Bearer"


def test_tampered_token_is_rejected_on_both(api_both: Api) -> None:
    token = api_both.tokens["ml"]
    tampered = token[:-2] + ("aa" if not token.endswith("aa") else "bb")
    for bad in (tampered, token[:-2], token[:5] + "\x00" + token[6:]):  # a NUL in the id part
        resp = api_both.client.get("/v1/jobs", headers={"Authorization": f"Bearer {bad}"})
        assert resp.status_code == 401, repr(bad)  # PostgreSQL refuses a NUL: never sent there
        assert resp.json()["detail"] == "unknown or invalid token"


def test_health_and_metrics_need_no_token(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok", "database": "sqlite"}
    assert api.client.get("/metrics").status_code == 200


def test_chaos_needs_an_admin(api: Api) -> None:
    body = {"provider": "oci", "action": "down"}
    resp = api.client.post("/v1/chaos", json=body, headers=api.auth("ml"))
    assert resp.status_code == 403 and "admin" in resp.json()["detail"]
    assert api.controller.calls == []
