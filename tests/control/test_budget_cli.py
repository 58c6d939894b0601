"""`overcast budget` over the real API app (in-process) and a real store: read, set, clear, errors."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from overcast.cli.budget import describe
from tests.control import test_usage_cli

tokens = test_usage_cli.tokens  # the fixture: a store behind the API app (ml spent $60 on-demand)


def _run(*args: str, code: int = 0) -> str:
    from overcast.cli.main import app

    result = CliRunner().invoke(app, ["budget", *args])
    assert result.exit_code == code, result.output
    return result.output


def test_an_admin_sets_and_clears_and_the_team_reads_its_own(tokens: dict[str, str]) -> None:
    """ml spent $60 on on-demand nodes from 2 h to 1 h ago (less if this month began since)."""
    since = r"since \d{4}-\d\d-01 \(UTC\)"
    spent = f"{json.loads(_run('ml', '--json'))['spent']:,.2f}"
    assert re.fullmatch(rf"team ml: no budget; spent \${spent} {since}\n", _run("ml"))
    out = _run("ml", "--set", "50000")
    assert re.fullmatch(rf"team ml: \$50,000\.00 a month; spent \${spent} {since}; \$[0-9,.]+ left\n", out)
    tokens["token"] = tokens["ml"]
    body = json.loads(_run("ml", "--json"))
    assert (body["team"], body["monthly_dollars"]) == ("ml", 50_000.0)
    assert body["remaining"] == pytest.approx(50_000.0 - body["spent"])
    assert "admin" in _run("ml", "--set", "1", code=1)  # a team cannot raise its own budget
    tokens["token"] = tokens["ops"]
    assert "team ml: $0.00 a month" in _run("ml", "--set", "0")
    assert "no budget" in _run("ml", "--clear")


def test_bad_requests_are_clear_errors(tokens: dict[str, str]) -> None:
    assert "no team 'nobody'" in _run("nobody", code=1)
    assert "choose one" in _run("ml", "--set", "5", "--clear", code=2)
    assert "dollars >= 0" in _run("ml", "--set", "-5", code=2)
    assert "dollars >= 0" in _run("ml", "--set", "nan", code=2)


def test_a_team_past_its_budget_reads_as_over() -> None:
    body = {"team": "ml", "monthly_dollars": 100.0, "month_start": 1_793_491_200.0, "spent": 112.5,
            "remaining": -12.5}  # fmt: skip
    assert (
        describe(body) == "team ml: $100.00 a month; spent $112.50 since 2026-11-01 (UTC); $12.50 over budget"
    )
