"""``python -m overcast.api create-team``: the way to get the first token."""

from __future__ import annotations

from pathlib import Path

import pytest

from overcast.api.__main__ import main
from overcast.store import Store


def test_create_team_prints_a_working_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OVERCAST_DATABASE_URL", raising=False)
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    assert main(["create-team", "ops", "--admin"]) == 0
    token = capsys.readouterr().out.strip()
    assert Store().team_for_token(token) == ("ops", True)
    assert main(["create-team", "no spaces"]) == 2
    assert "invalid team name" in capsys.readouterr().err
