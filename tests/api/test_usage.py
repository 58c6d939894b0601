"""GET /v1/usage over a real store (SQLite and PostgreSQL): team isolation, groupings, bad input."""

from __future__ import annotations

import pytest

from overcast.store import LaunchTerms
from tests.api.conftest import Api
from tests.store.test_jobs import FakeClock

H = 3600.0
NOW = 1_800_000_000.0


def _seed(api: Api) -> None:
    """ml: 2 h on 2 on-demand H100x8 nodes ($30/node-h); vision: 1 h on a reserved A100x4 node ($12)."""
    clock = FakeClock(NOW - 3 * H)
    api.store.clock = clock
    od = LaunchTerms("oci", "on-demand", 2, 8, "H100", 30.0)
    api.store.record_launch("j-ml", 1, "oci/r1/od", "local", "h", team="ml", terms=od)
    api.store.record_launch("j-vi", 1, "oci/r1/res", "local", "h", team="vision",
                            terms=LaunchTerms("oci", "reserved", 1, 4, "A100", 12.0))  # fmt: skip
    clock.now = NOW - 2 * H
    api.store.end_launch("j-vi", 1, "succeeded")
    clock.now = NOW - 1 * H
    api.store.end_launch("j-ml", 1, "succeeded")
    clock.now = NOW


def test_a_team_sees_only_its_own_usage(api_both: Api) -> None:
    api = api_both
    _seed(api)
    ml = api.client.get("/v1/usage", headers=api.auth("ml")).json()
    assert (ml["team"], ml["by"], ml["until"], ml["since"]) == ("ml", "team", NOW, NOW - 30 * 24 * H)
    assert [r["key"] for r in ml["rows"]] == ["ml"]
    assert ml["total"]["gpu_hours"] == pytest.approx(32.0) and ml["total"]["dollars"] == pytest.approx(120.0)
    jobs = api.client.get("/v1/usage", params={"by": "job"}, headers=api.auth("ml")).json()["rows"]
    assert [r["key"] for r in jobs] == ["j-ml"]  # not vision's job
    resp = api.client.get("/v1/usage", params={"team": "vision"}, headers=api.auth("ml"))
    assert resp.status_code == 403 and "own team" in resp.json()["detail"]


def test_admin_sees_every_team_and_reserved_apart(api_both: Api) -> None:
    api = api_both
    _seed(api)
    body = api.client.get("/v1/usage", params={"since": NOW - 4 * H}, headers=api.auth("ops")).json()
    rows = {r["key"]: r for r in body["rows"]}
    assert body["team"] is None and set(rows) == {"ml", "vision"}
    vision = rows["vision"]
    assert (vision["gpu_hours"], vision["reserved_gpu_hours"], vision["dollars"]) == (4.0, 4.0, 0.0)
    assert vision["reserved_dollars"] == pytest.approx(12.0)
    assert body["total"]["gpu_hours"] == pytest.approx(36.0) and body["total"]["launches"] == 2
    one = api.client.get("/v1/usage", params={"team": "vision", "by": "pool"}, headers=api.auth("ops")).json()
    assert [r["key"] for r in one["rows"]] == ["oci/r1/res"]
    half = {"since": NOW - 1.5 * H, "until": NOW, "by": "provider"}  # the last half hour of ml's launch only
    [oci] = api.client.get("/v1/usage", params=half, headers=api.auth("ops")).json()["rows"]
    assert (oci["key"], oci["gpu_hours"]) == ("oci", pytest.approx(0.5 * 16))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"since": NOW, "until": NOW - 1}, "must be before until"),
        ({"by": "zone"}, "query.by"),
        ({"since": -1}, "query.since"),
        ({"since": "nan"}, "query.since"),
        ({"until": "inf"}, "query.until"),
        ({"until": 1e13}, "query.until"),  # milliseconds, not seconds
        ({"team": "no such/team"}, "query.team"),
    ],
)
def test_bad_input_is_a_clear_422(api: Api, params: dict, expected: str) -> None:
    resp = api.client.get("/v1/usage", params=params, headers=api.auth("ops"))
    assert resp.status_code == 422 and expected in resp.json()["detail"]


def test_usage_needs_a_token(api: Api) -> None:
    assert api.client.get("/v1/usage").status_code == 401
