"""PUT/GET /v1/teams/{team}/budget over a real store (SQLite and PostgreSQL): who may set and read a
budget, what it reports this month, and bad input."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from overcast.store import LaunchTerms
from tests.api.conftest import Api
from tests.store.test_jobs import FakeClock

H = 3600.0
MONTH = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
NOW = MONTH + 3 * 24 * H


def _put(api: Api, team: str, body: object, *, token: str = "ops") -> httpx.Response:
    return api.client.put(f"/v1/teams/{team}/budget", json=body, headers=api.auth(token))


def test_an_admin_sets_and_clears_a_budget_and_the_team_reads_its_own(api_both: Api) -> None:
    api = api_both
    clock = FakeClock(MONTH - H)  # ml ran 2 on-demand nodes ($60/h) from an hour before the month began
    api.store.clock = clock
    api.store.record_launch("j-ml", 1, "oci/r1/od", "local", "h", team="ml",
                            terms=LaunchTerms("oci", "on-demand", 2, 8, "H100", 30.0))  # fmt: skip
    clock.now = MONTH + 2 * H
    api.store.end_launch("j-ml", 1, "succeeded")
    clock.now = NOW
    set_ = _put(api, "ml", {"monthly_dollars": 500})
    assert set_.status_code == 200
    body = set_.json()
    assert (body["team"], body["monthly_dollars"], body["month_start"]) == ("ml", 500.0, MONTH)
    assert body["spent"] == pytest.approx(120.0) and body["remaining"] == pytest.approx(
        380.0
    )  # this month's 2 h
    own = api.client.get("/v1/teams/ml/budget", headers=api.auth("ml"))
    assert own.status_code == 200 and own.json() == body
    assert api.store.budgets() == {"ml": 500.0}
    cleared = _put(api, "ml", {"monthly_dollars": None}).json()
    assert (cleared["monthly_dollars"], cleared["remaining"]) == (None, None)
    assert cleared["spent"] == pytest.approx(120.0)
    assert api.store.budgets() == {}


def test_only_an_admin_sets_a_budget_and_a_team_reads_only_its_own(api_both: Api) -> None:
    api = api_both
    resp = _put(api, "ml", {"monthly_dollars": 1e6}, token="ml")
    assert resp.status_code == 403 and "admin" in resp.json()["detail"]
    resp = _put(api, "vision", {"monthly_dollars": 1e6}, token="ml")
    assert resp.status_code == 403
    assert api.store.budgets() == {}
    resp = api.client.get("/v1/teams/vision/budget", headers=api.auth("ml"))
    assert resp.status_code == 403 and "own team" in resp.json()["detail"]
    admin = api.client.get("/v1/teams/vision/budget", headers=api.auth("ops"))
    assert admin.status_code == 200 and admin.json()["monthly_dollars"] is None
    assert api.client.get("/v1/teams/ml/budget").status_code == 401


def test_an_unknown_team_is_a_404(api_both: Api) -> None:
    api = api_both
    resp = _put(api, "nobody", {"monthly_dollars": 10})
    assert resp.status_code == 404 and "no team 'nobody'" in resp.json()["detail"]
    assert api.client.get("/v1/teams/nobody/budget", headers=api.auth("ops")).status_code == 404
    assert api.store.budgets() == {}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"monthly_dollars": -1}', "body.monthly_dollars"),
        ('{"monthly_dollars": NaN}', "body.monthly_dollars"),
        ('{"monthly_dollars": Infinity}', "body.monthly_dollars"),
        ('{"monthly_dollars": "lots"}', "body.monthly_dollars"),
        ("{}", "body.monthly_dollars"),  # null clears; leaving it out is a mistake
        ('{"monthly_dollars": 5, "currency": "EUR"}', "body.currency"),
    ],
)
def test_bad_budgets_are_a_clear_422(api: Api, raw: str, expected: str) -> None:
    headers = api.auth("ops") | {"Content-Type": "application/json"}
    resp = api.client.put("/v1/teams/ml/budget", content=raw, headers=headers)
    assert resp.status_code == 422 and expected in resp.json()["detail"]
    assert api.store.budgets() == {}


def test_a_bad_team_name_is_a_422(api: Api) -> None:
    resp = api.client.get("/v1/teams/no%20such/budget", headers=api.auth("ops"))
    assert resp.status_code == 422 and "path.team" in resp.json()["detail"]
