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


def test_rows_come_a_page_at_a_time_and_the_total_covers_them_all(api_both: Api) -> None:
    api = api_both
    _seed(api)
    api.store.record_launch("j-ml2", 1, "oci/r1/od", "local", "h", team="ml",  # running: up to until
                            terms=LaunchTerms("azure", "spot", 1, 8, "H100", 10.0))  # fmt: skip
    api.store.clock = FakeClock(NOW + H)
    ops = api.auth("ops")
    first = api.client.get("/v1/usage", params={"by": "job", "limit": 2}, headers=ops).json()
    assert [r["key"] for r in first["rows"]] == ["j-ml", "j-vi"]  # $120 spend, then $12 reserved worth
    assert (first["offset"], first["truncated"], first["next_offset"]) == (0, True, 2)
    assert first["total"]["launches"] == 3 and first["total"]["gpu_hours"] == pytest.approx(32 + 4 + 8)
    api.store.clock = FakeClock(NOW + 2 * H)  # later: the same until keeps the running launch's hours
    again = {"by": "job", "limit": 2, "offset": first["next_offset"], "until": first["until"]}
    last = api.client.get("/v1/usage", params=again, headers=ops).json()
    assert [r["key"] for r in last["rows"]] == ["j-ml2"] and last["rows"][0]["gpu_hours"] == pytest.approx(8)
    assert (last["offset"], last["truncated"], last["next_offset"]) == (2, False, None)
    assert last["total"] == first["total"]
    whole = api.client.get("/v1/usage", params={"by": "job"}, headers=api.auth("ml")).json()
    assert [r["key"] for r in whole["rows"]] == ["j-ml", "j-ml2"] and not whole["truncated"]  # limit 1000


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
        ({"by": "job", "limit": 0}, "query.limit"),
        ({"by": "job", "limit": 10_001}, "query.limit"),  # a page holds 10,000 rows at most
        ({"by": "job", "offset": -1}, "query.offset"),
    ],
)
def test_bad_input_is_a_clear_422(api: Api, params: dict, expected: str) -> None:
    resp = api.client.get("/v1/usage", params=params, headers=api.auth("ops"))
    assert resp.status_code == 422 and expected in resp.json()["detail"]


def test_usage_needs_a_token(api: Api) -> None:
    assert api.client.get("/v1/usage").status_code == 401
