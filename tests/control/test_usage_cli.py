"""`overcast usage` over the real API app (in-process) and a real store: the table, --json, --by, errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from overcast.api.app import create_app
from overcast.cli import jobs as cli_jobs
from overcast.cli import usage as cli_usage
from overcast.cli.main import app
from overcast.cli.usage import parse_when
from overcast.control.client import ApiClient
from overcast.store import LaunchTerms, Store

H = 3600.0


@pytest.fixture
def tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A store with an hour of on-demand use by ml and an hour of reserved use by vision, 2-1 h ago."""
    store = Store(f"sqlite:///{tmp_path / 'api.db'}")
    issued = {"ml": store.create_team("ml"), "ops": store.create_team("ops", admin=True)}
    now = time.time()
    store.clock = lambda: now - 2 * H
    store.record_launch("j-ml", 1, "oci/r1/od", "local", "h", team="ml",
                        terms=LaunchTerms("oci", "on-demand", 2, 8, "H100", 30.0))  # fmt: skip
    store.record_launch("j-vi", 1, "oci/r1/res", "local", "h", team="vision",
                        terms=LaunchTerms("oci", "reserved", 1, 4, "A100", 12.0))  # fmt: skip
    store.clock = lambda: now - 1 * H
    store.end_launch("j-ml", 1, "succeeded")
    store.end_launch("j-vi", 1, "succeeded")
    store.clock = time.time
    current = issued | {"token": issued["ops"]}  # the token the CLI sends; a test may switch it

    def client() -> ApiClient:
        api = ApiClient(url="http://testserver", token=current["token"])
        api.http = TestClient(create_app(store), headers={"Authorization": f"Bearer {current['token']}"})
        return api

    monkeypatch.setattr(cli_jobs, "_client", client)
    yield current
    store.close()


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, ["usage", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_table_shows_spend_and_reserved_use_apart(tokens: dict[str, str]) -> None:
    out = _run("--since", "1d").replace("┃", "│")
    cells = [[c.strip() for c in line.strip("│").split("│")] for line in out.splitlines() if "│" in line]
    rows = {row[0]: row[1:] for row in cells}
    assert rows["team"] == ["GPU-h", "spend $", "reserved GPU-h", "reserved $ (paid)", "launches"]
    assert rows["ml"] == ["16.0", "60.00", "0.0", "0.00", "1"]  # 2 nodes x 8 GPUs x 1 h at $30/node-h
    assert rows["vision"] == ["4.0", "0.00", "4.0", "12.00", "1"]  # reserved: used, worth $12, no spend
    assert rows["total"] == ["20.0", "60.00", "4.0", "12.00", "2"]


def test_json_and_by_and_a_teams_own_view(tokens: dict[str, str]) -> None:
    body = json.loads(_run("--since", "1d", "--by", "pool", "--json"))
    assert {r["key"] for r in body["rows"]} == {"oci/r1/od", "oci/r1/res"}
    tokens["token"] = tokens["ml"]
    body = json.loads(_run("--since", "1d", "--json"))
    assert [r["key"] for r in body["rows"]] == ["ml"]
    result = CliRunner().invoke(app, ["usage", "--team", "vision"])
    assert result.exit_code == 1 and "own team" in result.output


def test_the_top_n_rows_or_every_page(tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = _run("--since", "1d", "--by", "job", "--limit", "1").replace("┃", "│")
    cells = [[c.strip() for c in line.strip("│").split("│")] for line in out.splitlines() if "│" in line]
    assert [row[0] for row in cells] == ["job", "j-ml", "total"] and "the top 1 rows: more follow" in out
    assert cells[-1][1:] == ["20.0", "60.00", "4.0", "12.00", "2"]  # the total still counts both jobs
    monkeypatch.setattr(cli_usage, "_PAGE", 1)  # one row a request: --all must follow the pages
    body = json.loads(_run("--since", "1d", "--by", "job", "--all", "--json"))
    assert [r["key"] for r in body["rows"]] == ["j-ml", "j-vi"] and not body["truncated"]
    assert body["total"]["launches"] == 2


def test_times_parse_as_ago_dates_or_epochs() -> None:
    assert parse_when("7d", 1000.0 * H) == 1000.0 * H - 7 * 24 * H
    assert parse_when("90m", 10_000.0) == 10_000.0 - 5400.0
    assert parse_when("1700000000", 0.0) == 1_700_000_000.0
    assert parse_when("2026-11-01T00:00:00+00:00", 0.0) == 1_793_491_200.0
    with pytest.raises(typer.BadParameter, match="use 7d"):
        parse_when("last tuesday", 0.0)


def test_a_year_is_a_year_and_only_plausible_numbers_are_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert parse_when("2026", 0.0) == 1_767_225_600.0  # 2026-01-01 (local), not 2026 s after 1970
        assert parse_when("2026-11", 0.0) == parse_when("2026-11-01", 0.0) == 1_793_491_200.0
        assert parse_when("20261101", 0.0) == 1_793_491_200.0  # ISO's basic form
        assert parse_when("1000000000", 0.0) == 1e9 and parse_when("1793491200.5", 0.0) == 1_793_491_200.5
        bad = {"12345": "before 2001", "-5": "before 2001", "1793491200000": "milliseconds",
               "2026-13": "not a time", "nan": "not a time"}  # fmt: skip
        for text, why in bad.items():
            with pytest.raises(typer.BadParameter, match=why):
                parse_when(text, 0.0)
    finally:
        monkeypatch.undo()
        time.tzset()
    result = CliRunner().invoke(app, ["usage", "--since", "12345"])
    assert result.exit_code == 2 and "before 2001" in result.output
