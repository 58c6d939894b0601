"""``python -m overcast.api create-team``: the way to get the first token."""

from __future__ import annotations

from pathlib import Path

import pytest

from overcast.api.__main__ import main
from overcast.store import Store
from overcast.store.tokens import split_token


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


def test_tokens_are_listed_by_id_and_a_revoked_token_stops_working(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OVERCAST_DATABASE_URL", raising=False)
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    assert main(["create-team", "ml"]) == 0 and main(["create-team", "ml"]) == 0
    first, second = capsys.readouterr().out.split()
    store = Store()
    assert main(["tokens", "ml"]) == 0
    listed = capsys.readouterr().out
    ids = [line.split()[0] for line in listed.splitlines()]
    (first_id, first_secret), (second_id, _) = split_token(first), split_token(second)
    assert sorted(ids) == sorted([first_id, second_id])
    assert first_secret not in listed  # ids only: the secrets are not kept, never shown
    assert main(["revoke-token", first]) == 0  # the whole token works too, and is not echoed
    out = capsys.readouterr().out
    assert "revoked token" in out and first not in out
    assert store.team_for_token(first) is None and store.team_for_token(second) == ("ml", False)
    assert main(["revoke-token", second_id]) == 0  # by its id
    assert store.team_for_token(second) is None
    assert main(["revoke-token", "0123456789abcdef"]) == 2 and "no token with id" in capsys.readouterr().err
    assert main(["revoke-token", f" {second}!"]) == 2  # mangled: refused without printing it back
    err = capsys.readouterr().err
    assert "not a token id" in err and split_token(second)[1] not in err
    assert main(["tokens", "nobody"]) == 2
